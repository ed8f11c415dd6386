import Foundation
import Testing
@testable import LongMixerCore

/// Child processes have a time limit and die with their parent.
@Suite("ChildProcess")
struct ChildProcessTests {
    @Test("output, error output and exit status come back")
    func runsAndCaptures() throws {
        let r = try ChildProcess.run("sh", ["-c", "echo out; echo first >&2; echo last >&2; exit 3"], timeout: 30)
        #expect(r.status == 3)
        #expect(String(decoding: r.standardOutput, as: UTF8.self) == "out\n")
        #expect(r.lastErrorLine == "last")
        // More output than a pipe holds does not block the child.
        let big = try ChildProcess.run("sh", ["-c", "head -c 1000000 /dev/zero"], timeout: 30)
        #expect(big.status == 0 && big.standardOutput.count == 1_000_000)
    }

    @Test("waiting for a program costs no CPU, whether its output is captured, discarded or closed early")
    func waitingDoesNotSpin() throws {
        // The wait runs on the calling thread: its CPU time is the wait's cost (other tests run on other threads).
        func threadCPUSeconds() -> Double {
            var ts = timespec()
            clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
            return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
        }
        for (script, capture) in [("sleep 1", false), ("sleep 1", true), ("exec >&- 2>&-; sleep 1", true)] {
            let c0 = threadCPUSeconds()
            let r = try ChildProcess.run("sh", ["-c", script], timeout: 30, captureOutput: capture)
            let cpu = threadCPUSeconds() - c0
            #expect(r.status == 0)
            // A busy wait would take about the whole second.
            #expect(cpu < 0.25, "\(script), captured \(capture): \(cpu) s of CPU while waiting 1 s")
        }
    }

    @Test("a missing program is one runtime error")
    func missingProgram() {
        let e = #expect(throws: UserError.self) { try ChildProcess.run("no-such-program-\(UUID().uuidString)", [], timeout: 5) }
        #expect(e?.kind == .runtime)
        let f = #expect(throws: UserError.self) { try ChildProcess.run("/nonexistent/tool", [], timeout: 5) }
        #expect(f?.description.contains("not found") == true)
    }

    @Test("a program that outlives its timeout is stopped, with its own children")
    func timeout() throws {
        let start = Date()
        let e = #expect(throws: UserError.self) {
            try ChildProcess.run("sh", ["-c", "sleep 60 & sleep 60; wait"], timeout: 0.5)
        }
        #expect(Date().timeIntervalSince(start) < 10)
        #expect(e?.kind == .runtime && e?.exitCode == 1)
        #expect(e?.description.contains("did not finish within 0.5 s") == true, "\(String(describing: e))")
    }

    @Test("a program killed by a signal reports it; one that exits leaves no children behind")
    func statusAndLeftovers() throws {
        let killed = try ChildProcess.run("sh", ["-c", "kill -9 $$"], timeout: 30)
        #expect(killed.status == 128 + SIGKILL)
        let r = try ChildProcess.run("sh", ["-c", "sleep 60 & echo $!"], timeout: 30)
        let pid = try #require(Int32(String(decoding: r.standardOutput, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)))
        for _ in 0..<300 where Self.alive(pid) { usleep(10_000) }
        #expect(!Self.alive(pid), "background child \(pid) outlived its program")
        if Self.alive(pid) { kill(pid, SIGKILL) }
    }

    static func alive(_ pid: Int32) -> Bool {
        guard kill(pid, 0) == 0 else { return false }
        // A zombie waiting for its new parent to reap it is dead too.
        let stat = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
        return !stat.contains(") Z ")
    }

    /// Killing the parent with SIGKILL (no handler can run) still takes the program down, and the
    /// program's own children with it. Each script writes the pid that must die to FILE.
    @Test("the program and its own children die with the parent",
          arguments: ["echo $$ > FILE; exec sleep 60", "sleep 60 & echo $! > FILE; wait"])
    func diesWithParent(script: String) async throws {
        let result = await #expect(processExitsWith: .signal(SIGKILL), observing: [\.standardOutputContent]) { [script] in
            let file = FileManager.default.temporaryDirectory.appendingPathComponent("longmixer-child-\(getpid())").path
            let command = script.replacingOccurrences(of: "FILE", with: file)
            let thread = Thread { _ = try? ChildProcess.run("sh", ["-c", command], timeout: 120) }
            thread.start()
            for _ in 0..<500 where !FileManager.default.fileExists(atPath: file) { usleep(10_000) }
            usleep(50_000)
            let pid = (try? String(contentsOfFile: file, encoding: .utf8)) ?? ""
            try? FileManager.default.removeItem(atPath: file)
            print(pid.trimmingCharacters(in: .whitespacesAndNewlines))
            fflush(stdout)
            kill(getpid(), SIGKILL)
        }
        let text = String(decoding: result?.standardOutputContent ?? [], as: UTF8.self)
        let pid = try #require(Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)), "child pid: '\(text)'")
        for _ in 0..<300 where Self.alive(pid) { usleep(10_000) }
        #expect(!Self.alive(pid), "process \(pid) of '\(script)' outlived the parent")
        if Self.alive(pid) { kill(pid, SIGKILL) }
    }
}
