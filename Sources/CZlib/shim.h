// Debian's zlib1g-dev: raw inflate for zip archives, gzip members, the zlib streams inside PNG files, CRC-32.
#include <zlib.h>
