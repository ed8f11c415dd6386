// fork + exec in C because the child must call prctl(PR_SET_PDEATHSIG) between the two: posix_spawn
// has no hook for it, and Swift code must not run in the child of a multi-threaded process. Only
// async-signal-safe calls happen after fork.
#define _GNU_SOURCE
#include "CLongMixerProcess.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

int longmixer_pipe_cloexec(int fds[2]) {
    return pipe2(fds, O_CLOEXEC) == 0 ? 0 : -errno;
}

pid_t longmixer_spawn(const char *path, char *const argv[], char *const envp[], int out_fd, int err_fd) {
    int report[2];
    if (pipe2(report, O_CLOEXEC) != 0) return -errno;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(report[0]);
        close(report[1]);
        return -e;
    }
    if (pid == 0) {
        // Dies with the parent, even when the parent is killed with SIGKILL.
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent) _exit(127);
        setpgid(0, 0);   // a timeout can stop the child's own children too (kill(-pid))
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0) { dup2(devnull, 0); if (devnull != 0) close(devnull); }
        if (out_fd >= 0) dup2(out_fd, 1);
        if (err_fd >= 0) dup2(err_fd, 2);
        // The default signal dispositions the child expects (the parent may ignore SIGPIPE).
        signal(SIGPIPE, SIG_DFL);
        execve(path, argv, envp);
        int e = errno;
        (void)!write(report[1], &e, sizeof e);
        _exit(127);
    }
    close(report[1]);
    int e = 0;
    ssize_t n;
    do { n = read(report[0], &e, sizeof e); } while (n < 0 && errno == EINTR);
    close(report[0]);
    if (n == (ssize_t)sizeof e) {
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
        return -e;
    }
    return pid;
}

// A signal handler may only touch a volatile sig_atomic_t; the training loop polls it between steps.
static volatile sig_atomic_t stop_signal = 0;

static void record_stop_signal(int signal_number) {
    if (stop_signal == 0) stop_signal = signal_number;
}

int longmixer_catch_stop_signals(void) {
    struct sigaction action = {0};
    action.sa_handler = record_stop_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESETHAND | SA_RESTART;
    stop_signal = 0;
    if (sigaction(SIGINT, &action, NULL) != 0 || sigaction(SIGTERM, &action, NULL) != 0) return -errno;
    // A process can inherit them blocked (some launchers block signals in the thread that spawns):
    // unblocked here, in the calling thread, they reach the handler.
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    return pthread_sigmask(SIG_UNBLOCK, &stop_signals, NULL) == 0 ? 0 : -errno;
}

int longmixer_stop_signal(void) { return stop_signal; }

void longmixer_release_stop_signals(void) {
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    stop_signal = 0;
}
