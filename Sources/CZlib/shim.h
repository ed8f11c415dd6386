// Debian's zlib1g-dev puts zlib.h on the default include path: gzip members, zlib streams (PNG),
// raw inflate (zip archives) and CRC-32.
#include <zlib.h>
