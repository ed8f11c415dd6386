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

    /// Killing the parent with SIGKILL (no handler can run) still takes the child down.
    @Test("the child dies with its parent")
    func diesWithParent() async throws {
        let result = await #expect(processExitsWith: .signal(SIGKILL), observing: [\.standardOutputContent]) {
            let file = FileManager.default.temporaryDirectory.appendingPathComponent("longmixer-child-\(getpid())").path
            let thread = Thread { _ = try? ChildProcess.run("sh", ["-c", "echo $$ > \(file); exec sleep 60"], timeout: 120) }
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
        func alive() -> Bool {
            guard kill(pid, 0) == 0 else { return false }
            // A zombie waiting for its new parent to reap it is dead too.
            let stat = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
            return !stat.contains(") Z ")
        }
        for _ in 0..<300 where alive() { usleep(10_000) }
        #expect(!alive(), "child \(pid) outlived its parent")
        if alive() { kill(pid, SIGKILL) }
    }
}
