// Debian's libopenblas-dev puts cblas.h on the default include path; it also declares
// openblas_set_num_threads / openblas_get_num_threads / openblas_get_corename.
#include <cblas.h>
