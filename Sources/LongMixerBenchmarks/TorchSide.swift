import Foundation
#if canImport(Glibc)
import Glibc
#endif
import LongMixerCore

/// The Python interpreter that runs the PyTorch side of a benchmark: `--python`, else
/// `LONGMIXER_TORCH_PYTHON`, else `python3` from PATH.
public struct TorchInterpreter: Sendable, Equatable {
    public var path: String
    /// Where the path came from, as the user would name it: `--python`, `LONGMIXER_TORCH_PYTHON` or `python3`.
    public var source: String

    public init(path: String, source: String) {
        self.path = path
        self.source = source
    }

    public static func resolve(option: String?, environment: String? = RuntimeOptions.environment.torchPython) -> TorchInterpreter {
        if let option, !option.isEmpty { return TorchInterpreter(path: option, source: "--python") }
        if let environment, !environment.isEmpty { return TorchInterpreter(path: environment, source: "LONGMIXER_TORCH_PYTHON") }
        return TorchInterpreter(path: "python3", source: "python3")
    }
}

/// What the PyTorch side reports about itself.
public struct TorchInfo: Codable, Sendable, Equatable {
    public var version: String
    /// `torch.backends.cpu.get_cpu_capability()`: the instruction set of its kernels (AVX2, AVX512, …).
    public var capability: String?
}

public enum TorchSide {
    /// The worker every benchmark's PyTorch side runs in, relative to the repository root.
    public static let workerScript = "Scripts/bench/torch_worker.py"

    /// Checks, before any timing, that `interpreter` exists, imports torch, and that `script` is
    /// reachable from the current directory; each failure is one usage error naming what is missing.
    public static func check(_ interpreter: TorchInterpreter, script: String = workerScript) throws -> TorchInfo {
        let remedy = "name an interpreter that has torch with --python or LONGMIXER_TORCH_PYTHON"
        let what = interpreter.source == "python3" ? "--torch" : interpreter.source
        let output: ChildProcess.Output
        do {
            output = try ChildProcess.run(interpreter.path, ["-c", probe], timeout: 300)
        } catch let e as UserError {
            throw UserError(what: what, value: interpreter.path, why: "no Python interpreter there (\(e.why))", remedy: remedy)
        }
        guard output.status == 0 else {
            let reason = output.lastErrorLine.isEmpty ? "exit status \(output.status)" : output.lastErrorLine
            throw UserError(what: what, value: interpreter.path, why: "cannot import torch (\(reason))",
                            remedy: "install PyTorch for it (\(interpreter.path) -m pip install torch), or \(remedy)")
        }
        let line = String(decoding: output.standardOutput, as: UTF8.self).split(separator: "\n").last.map(String.init) ?? ""
        guard let info = try? JSONDecoder().decode(TorchInfo.self, from: Data(line.utf8)) else {
            throw UserError(what: what, value: interpreter.path, why: "imported torch but printed no version (\(line.prefix(80)))", remedy: remedy)
        }
        guard FileManager.default.fileExists(atPath: script) else {
            throw UserError(what: "--torch", value: script, why: "the PyTorch worker script is not reachable from the current directory",
                            remedy: "run from the repository root")
        }
        return info
    }

    /// The worker's environment: `threads` threads for its OpenMP, MKL and OpenBLAS pools, and PyTorch
    /// held to the instruction set of our kernels. On a CPU with AVX-512 whose kernels here run the AVX2
    /// path (`LONGMIXER_NO_AVX512=1`), PyTorch's kernel dispatch, MKL and oneDNN are held to AVX2 too,
    /// so the ratio is the one an AVX2-only server sees. An instruction-set variable the user set is kept.
    public static func workerEnvironment(threads: Int, base: [String: String] = ProcessInfo.processInfo.environment,
                                         cpuHasAVX512: Bool = CPUFeatures.flags.contains("avx512f"),
                                         kernelsUseAVX512: Bool = CPUFeatures.avx512) -> [String: String] {
        var environment = base
        for key in ["OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"] { environment[key] = String(threads) }
        if cpuHasAVX512 && !kernelsUseAVX512 {
            for (key, value) in avx2Environment where environment[key] == nil { environment[key] = value }
        }
        return environment
    }

    /// PyTorch 2.x's switches to its AVX2 code: ATen's CPU dispatch, MKL's and oneDNN's instruction sets.
    public static let avx2Environment = ["ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"]

    static let probe = """
        import json, torch
        print(json.dumps({"version": torch.__version__, "capability": torch.backends.cpu.get_cpu_capability()}))
        """
}

/// A running `Scripts/bench/torch_worker.py`: requests and replies are JSON lines over two named pipes,
/// so one PyTorch process serves a whole benchmark and its calls alternate with the Swift side's,
/// round by round (a subprocess per sample would time Python's start-up, one per length would not
/// alternate). The worker runs under `ChildProcess` on a thread of its own, so it dies with us.
public final class TorchWorker {
    public private(set) var info = TorchInfo(version: "unknown", capability: nil)
    public let threads: Int
    let directory: URL
    let requests: Int32, replies: Int32
    let ending = Ending()
    private var pending = Data()
    private var closed = false

    /// How the worker ended: set by its thread, which then signals `finished`.
    final class Ending: @unchecked Sendable {
        let finished = DispatchSemaphore(value: 0)
        private let lock = NSLock()
        private var value: Result<ChildProcess.Output, Error>?

        func set(_ v: Result<ChildProcess.Output, Error>) { lock.lock(); value = v; lock.unlock(); finished.signal() }
        /// The outcome if the worker has ended (non-blocking).
        func ended() -> Result<ChildProcess.Output, Error>? {
            guard finished.wait(timeout: .now()) == .success else { return nil }
            finished.signal()   // stays signalled for the next look and for close()
            lock.lock(); defer { lock.unlock() }
            return value
        }
    }

    /// Starts the worker with `threads` threads and asks for its version. `interpreter` should have
    /// passed `TorchSide.check`.
    public init(interpreter: TorchInterpreter, threads: Int, script: String = TorchSide.workerScript) throws {
        self.threads = threads
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("longmixer-torch-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let requestPath = directory.appendingPathComponent("requests").path, replyPath = directory.appendingPathComponent("replies").path
        guard mkfifo(requestPath, 0o600) == 0, mkfifo(replyPath, 0o600) == 0 else {
            throw UserError(.runtime, what: "--torch", why: "cannot create the pipes to the PyTorch worker (\(String(cString: strerror(errno))))")
        }
        // Read-write and non-blocking opens return at once on Linux, whether or not the worker has started.
        requests = open(requestPath, O_RDWR | O_CLOEXEC)
        replies = open(replyPath, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        let environment = TorchSide.workerEnvironment(threads: threads)
        let arguments = [script, "--requests", requestPath, "--replies", replyPath, "--threads", String(threads)]
        let ending = self.ending
        let thread = Thread {
            // A week: the worker lives as long as the benchmark; the pipes, not this limit, end it.
            ending.set(Result { try ChildProcess.run(interpreter.path, arguments, timeout: 7 * 86_400, environment: environment, captureOutput: false) })
        }
        thread.start()
        do {
            let hello = try request(["op": "hello"], what: "start-up")
            info = TorchInfo(version: hello["version"] as? String ?? "unknown", capability: hello["capability"] as? String)
        } catch {
            close()
            throw error
        }
    }

    deinit { close() }

    /// Ends the worker (it stops when its request pipe closes) and removes the pipes.
    public func close() {
        guard !closed else { return }
        closed = true
        Glibc.close(requests)
        ending.finished.wait()
        Glibc.close(replies)
        try? FileManager.default.removeItem(at: directory)
    }

    /// Sends one request and waits for its reply; a reply with `"ok": false`, or the worker's end,
    /// is a runtime error naming `what`.
    public func request(_ body: [String: Any], what: String) throws -> [String: Any] {
        var line = try JSONSerialization.data(withJSONObject: body, options: [.sortedKeys])
        line.append(0x0A)
        let written = line.withUnsafeBytes { write(requests, $0.baseAddress, $0.count) }
        guard written == line.count else { throw failure(what, "the request could not be sent") }
        while true {
            if let newline = pending.firstIndex(of: 0x0A) {
                let reply = pending[pending.startIndex..<newline]
                pending = Data(pending[(newline + 1)...])
                guard let object = try? JSONSerialization.jsonObject(with: reply) as? [String: Any] else {
                    throw failure(what, "unreadable reply: \(String(decoding: reply.prefix(120), as: UTF8.self))")
                }
                guard object["ok"] as? Bool == true else { throw failure(what, object["error"] as? String ?? "failed") }
                return object
            }
            var fds = pollfd(fd: replies, events: Int16(POLLIN), revents: 0)
            _ = poll(&fds, 1, 100)
            var buffer = [UInt8](repeating: 0, count: 4096)
            let n = read(replies, &buffer, buffer.count)
            if n > 0 { pending.append(contentsOf: buffer[0..<n]); continue }
            if n == 0 || n < 0 && errno != EAGAIN && errno != EINTR, let end = ending.ended() {
                switch end {
                case .success(let output): throw failure(what, "the worker ended (exit \(output.status)): \(output.lastErrorLine)")
                case .failure(let error): throw failure(what, "\(error)")
                }
            }
        }
    }

    func failure(_ what: String, _ why: String) -> UserError {
        UserError(.runtime, what: "PyTorch side", value: what, why: why)
    }
}
