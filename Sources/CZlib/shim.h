// Debian's zlib1g-dev puts zlib.h on the default include path (raw inflate for zip archives).
#include <zlib.h>
