#ifndef CLONGMIXERPROCESS_H
#define CLONGMIXERPROCESS_H

#include <sys/types.h>

/// Starts `path` (an absolute path) with `argv` (NULL-terminated, argv[0] first) and `envp`, stdin from
/// /dev/null, stdout on `out_fd` and stderr on `err_fd`, in a new process group led by a guardian
/// process that kills the whole group when the caller dies (even by SIGKILL) and exits with the
/// program's status. Returns the guardian's pid (= the group id), or -errno when fork or exec failed
/// (exec errors come back through a close-on-exec pipe, so "no such file" is reported, not an exit
/// status of 127).
///
/// Linux sends the parent-death signal when the *thread* that forked exits, so the caller must wait
/// for the child on the thread that started it (ChildProcess.run does).
pid_t longmixer_spawn(const char *path, char *const argv[], char *const envp[], int out_fd, int err_fd);

/// pipe2(fds, O_CLOEXEC) (Glibc's Swift overlay does not export pipe2). Returns 0 or -errno.
int longmixer_pipe_cloexec(int fds[2]);

/// Catches SIGINT and SIGTERM: the first one is recorded (read it with longmixer_stop_signal) and the
/// default action is restored, so a second one stops the process at once. Returns 0 or -errno.
int longmixer_catch_stop_signals(void);

/// The stop signal caught since longmixer_catch_stop_signals (0: none).
int longmixer_stop_signal(void);

/// Forgets a caught signal and restores the default actions.
void longmixer_release_stop_signals(void);

#endif
