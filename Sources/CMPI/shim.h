// MPI for Swift: mpi.h itself, plus functions for the handles that MPI implementations define as
// macros over addresses of globals (MPI_COMM_WORLD, MPI_FLOAT, MPI_SUM, MPI_IN_PLACE, …), which Swift
// cannot import.
#include <mpi.h>

static inline MPI_Comm longmixer_mpi_comm_world(void) { return MPI_COMM_WORLD; }
static inline MPI_Datatype longmixer_mpi_float(void) { return MPI_FLOAT; }
static inline MPI_Datatype longmixer_mpi_double(void) { return MPI_DOUBLE; }
static inline MPI_Datatype longmixer_mpi_byte(void) { return MPI_BYTE; }
static inline MPI_Op longmixer_mpi_sum(void) { return MPI_SUM; }
static inline MPI_Op longmixer_mpi_max(void) { return MPI_MAX; }
static inline void *longmixer_mpi_in_place(void) { return MPI_IN_PLACE; }
static inline int longmixer_mpi_success(void) { return MPI_SUCCESS; }
static inline int longmixer_mpi_thread_funneled(void) { return MPI_THREAD_FUNNELED; }
static inline int longmixer_mpi_max_error_string(void) { return MPI_MAX_ERROR_STRING; }
// Errors come back as return codes (a UserError per failure) instead of aborting the job.
static inline int longmixer_mpi_return_errors(MPI_Comm comm) { return MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN); }
// MPI_Test without a status (MPI_STATUS_IGNORE is a macro too).
static inline int longmixer_mpi_test(MPI_Request *request, int *done) { return MPI_Test(request, done, MPI_STATUS_IGNORE); }
