// Debian's zlib1g-dev: gzip members and the zlib streams inside PNG files, and CRC-32.
#include <zlib.h>
