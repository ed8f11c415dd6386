// The functions of this target are all `static inline` in include/CLongMixerMemory.h; SwiftPM needs
// one source file to build a C target.
#include "CLongMixerMemory.h"
