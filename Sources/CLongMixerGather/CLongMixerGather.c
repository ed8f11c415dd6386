// The functions of this target are all `static inline` in include/CLongMixerGather.h; SwiftPM needs
// one source file to build a C target.
#include "CLongMixerGather.h"
