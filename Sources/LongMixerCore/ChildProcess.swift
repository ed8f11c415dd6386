import CLongMixerProcess
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Runs another program with a time limit; the program dies with us.
///
/// Foundation's `Process` has neither: a hung `pip` blocked `data fetch` forever, and killing
/// `longmixer` left its child running. swift-subprocess has timeouts (through task cancellation) but
/// is async-only and has no parent-death option, so this is fork + `prctl(PR_SET_PDEATHSIG)` + exec in
/// a small C shim (`CLongMixerProcess`). The program runs in its own process group under a guardian
/// that kills the group when we die, so the program's own children go too; on timeout the whole
/// group gets SIGTERM, then SIGKILL after a grace period. Everything blocks the calling thread,
/// which is also what keeps the parent-death signal armed (Linux ties it to the forking thread).
public enum ChildProcess {
    public struct Output: Sendable {
        public var status: Int32
        public var standardOutput: Data
        /// The last 64 KiB of the child's stderr.
        public var standardError: Data

        /// The last non-empty line of stderr, for one-line messages.
        public var lastErrorLine: String {
            String(decoding: standardError, as: UTF8.self).split(separator: "\n").last.map(String.init) ?? ""
        }
    }

    static let keptErrorBytes = 64 << 10
    static let gracePeriod = 2.0

    /// Runs `executable` (a path, or a name looked up in PATH) with `arguments` and waits at most
    /// `timeout` seconds. Throws a runtime `UserError` when it cannot start or does not finish in
    /// time; a non-zero exit status is returned, not thrown (callers know what it means).
    /// `captureOutput: false` sends stdout to /dev/null.
    public static func run(_ executable: String, _ arguments: [String], timeout: Double,
                           environment: [String: String]? = nil, captureOutput: Bool = true) throws -> Output {
        let name = URL(fileURLWithPath: executable).lastPathComponent
        guard let path = resolve(executable, path: (environment ?? ProcessInfo.processInfo.environment)["PATH"]) else {
            throw UserError(.runtime, what: name, value: executable, why: "not found (no executable of that name in PATH)",
                            remedy: "install it or put it in PATH")
        }
        var outPipe: [Int32] = [-1, -1], errPipe: [Int32] = [-1, -1]
        let outError = longmixer_pipe_cloexec(&outPipe)
        guard outError == 0 else { throw startFailure(name, -outError) }
        let errError = longmixer_pipe_cloexec(&errPipe)
        guard errError == 0 else { close(outPipe[0]); close(outPipe[1]); throw startFailure(name, -errError) }
        var nullFD: Int32 = -1
        if !captureOutput { nullFD = open("/dev/null", O_WRONLY | O_CLOEXEC) }

        let env = (environment ?? ProcessInfo.processInfo.environment).map { "\($0.key)=\($0.value)" }
        // Not while a threaded OpenBLAS call runs on another thread: OpenBLAS's fork handler stops its
        // thread pool, and a call in flight then waits for its workers forever.
        let pid = BLAS.openBLASLock.withLock {
            withCStrings([path] + arguments) { argv in
                withCStrings(env) { envp in
                    longmixer_spawn(path, argv, envp, captureOutput ? outPipe[1] : nullFD, errPipe[1])
                }
            }
        }
        close(outPipe[1]); close(errPipe[1])
        if nullFD >= 0 { close(nullFD) }
        guard pid > 0 else {
            close(outPipe[0]); close(errPipe[0])
            throw startFailure(name, -pid)
        }
        defer { close(outPipe[0]); close(errPipe[0]) }
        for fd in [outPipe[0], errPipe[0]] { _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) }

        var out = Data(), err = Data()
        // A pipe at its end (the child closed it, or it never had a writer: standard output when it is
        // not captured) is no longer polled — poll reports it ready at once, and the wait would spin.
        var atEnd = [false, false]
        func drain() {
            var buffer = [UInt8](repeating: 0, count: 65536)
            for (i, fd) in [outPipe[0], errPipe[0]].enumerated() where !atEnd[i] {
                while true {
                    let n = read(fd, &buffer, buffer.count)
                    if n == 0 { atEnd[i] = true }
                    if n <= 0 { break }
                    if i == 0 { out.append(contentsOf: buffer[0..<n]) } else {
                        err.append(contentsOf: buffer[0..<n])
                        if err.count > 2 * keptErrorBytes { err = err.suffix(keptErrorBytes) }
                    }
                }
            }
        }
        let deadline = Date().addingTimeInterval(timeout)
        var status: Int32 = 0
        while true {
            // Negative descriptors are skipped; with both pipes at their end, poll only waits the 50 ms.
            var fds = [pollfd(fd: atEnd[0] ? -1 : outPipe[0], events: Int16(POLLIN), revents: 0),
                       pollfd(fd: atEnd[1] ? -1 : errPipe[0], events: Int16(POLLIN), revents: 0)]
            _ = poll(&fds, 2, 50)
            drain()
            let r = waitpid(pid, &status, WNOHANG)
            if r == pid { break }
            if r < 0 && errno != EINTR { status = 0; break }
            if Date() >= deadline {
                stop(pid, status: &status)
                drain()
                throw UserError(.runtime, what: name, value: ([name] + arguments.prefix(3)).joined(separator: " "),
                                why: "did not finish within \(formatSeconds(timeout)) and was stopped",
                                remedy: "check the network or the program, then try again")
            }
        }
        drain()
        let code: Int32 = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        return Output(status: code, standardOutput: out, standardError: err.suffix(keptErrorBytes))
    }

    /// SIGTERM to the child's process group, SIGKILL after the grace period, then reaps the child.
    static func stop(_ pid: pid_t, status: inout Int32) {
        kill(-pid, SIGTERM)
        let until = Date().addingTimeInterval(gracePeriod)
        while Date() < until {
            if waitpid(pid, &status, WNOHANG) == pid { kill(-pid, SIGKILL); return }
            usleep(20_000)
        }
        kill(-pid, SIGKILL)
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    }

    static func startFailure(_ name: String, _ code: Int32) -> UserError {
        UserError(.runtime, what: name, why: "cannot be started (\(String(cString: strerror(code))))")
    }

    static func formatSeconds(_ s: Double) -> String {
        s == s.rounded() ? "\(Int(s)) s" : String(format: "%.1f s", s)
    }

    /// `executable` if it contains a slash, else the first executable file of that name in `path`.
    static func resolve(_ executable: String, path: String?) -> String? {
        if executable.contains("/") { return access(executable, X_OK) == 0 ? executable : nil }
        for directory in (path ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":") {
            let candidate = "\(directory)/\(executable)"
            var info = stat()
            if access(candidate, X_OK) == 0, stat(candidate, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG { return candidate }
        }
        return nil
    }

    /// A NULL-terminated array of C strings alive for the duration of `body`.
    static func withCStrings<T>(_ strings: [String], _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> T) -> T {
        let pointers = strings.map { strdup($0) } + [nil]
        defer { for p in pointers { free(p) } }
        return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
    }
}
