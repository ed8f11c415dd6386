// Debian's liblzma-dev: .xz files (the Klebsiella genomes ship as .fna.xz).
#include <lzma.h>
