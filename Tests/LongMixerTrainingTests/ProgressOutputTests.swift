import Foundation
import Testing
@testable import LongMixerTraining
import LongMixerCore

/// What `longmixer train` prints: one live line redrawn in place on a terminal (checked under a
/// pseudo-terminal), plain lines in a pipe, only the last line with --quiet, JSON with --json.
@Suite("Progress output", .serialized)
struct ProgressOutputTests {
    static let run = ["train", "--task", "adding", "--length", "16", "--dimensions", "8", "--hidden", "8", "--batch-size", "4",
                      "--train-size", "64", "--val-size", "16", "--test-size", "16", "--threads", "1", "--steps", "60",
                      "--eval-interval", "20", "--log-interval", "10", "--output", "run"]

    /// Runs the CLI with its standard output on a pseudo-terminal `columns` wide; returns what it wrote.
    static func underTerminal(_ arguments: [String], columns: UInt16, in directory: URL) throws -> (status: Int32, output: String) {
        // posix_openpt and friends by hand (Glibc's module does not export them): unlock, then ask its number.
        let master = open("/dev/ptmx", O_RDWR | O_NOCTTY)
        try #require(master >= 0, "no pseudo-terminal (/dev/ptmx)")
        defer { close(master) }
        var unlock: Int32 = 0, number: UInt32 = 0
        try #require(ioctl(master, 0x4004_5431 /* TIOCSPTLCK */, &unlock) == 0 && ioctl(master, 0x8004_5430 /* TIOCGPTN */, &number) == 0)
        let slavePath = "/dev/pts/\(number)"
        var size = winsize(ws_row: 24, ws_col: columns, ws_xpixel: 0, ws_ypixel: 0)
        _ = ioctl(master, UInt(TIOCSWINSZ), &size)
        let slave = open(slavePath, O_RDWR | O_NOCTTY)
        try #require(slave >= 0)
        let process = Process()
        process.executableURL = TrainCommandTests.executable
        process.arguments = arguments
        process.currentDirectoryURL = directory
        process.standardOutput = FileHandle(fileDescriptor: slave, closeOnDealloc: false)
        process.standardError = FileHandle.nullDevice
        try process.run()
        close(slave)   // the child holds it now: reading the master ends (EIO) when the child is gone
        var output = Data()
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = read(master, &buffer, buffer.count)
            if n <= 0 { break }
            output.append(contentsOf: buffer[0..<n])
        }
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: output, as: UTF8.self))
    }

    @Test func liveLineUnderATerminal() throws {
        let dir = try TrainCommandTests.scratch()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (status, output) = try Self.underTerminal(Self.run, columns: 80, in: dir)
        #expect(status == 0, "\(output)")
        // The terminal turns "\n" into "\r\n"; within a line, "\r" starts a redraw and ESC[K clears the rest.
        let lines = output.replacingOccurrences(of: "\r\n", with: "\n").split(separator: "\n", omittingEmptySubsequences: false)
        let draws = lines.flatMap { $0.split(separator: "\r") }.map { $0.replacingOccurrences(of: "\u{1B}[K", with: "") }.filter { !$0.isEmpty }
        let live = draws.filter { $0.hasPrefix("step ") }
        #expect(!live.isEmpty, "no live progress line: \(output.debugDescription)")
        #expect(live.contains { $0.hasPrefix("step 60/60") && $0.contains("ETA") && $0.contains("seq/s") }, "\(live)")
        #expect(draws.allSatisfy { $0.count < 80 || !$0.hasPrefix("step ") }, "a live line is wider than the terminal: \(live)")
        // Train records are not printed as lines of their own; evaluations and the end are.
        #expect(!lines.contains { $0.hasPrefix("step ") && !$0.contains("\r") }, "\(lines)")
        #expect(lines.contains { $0.contains("validation @ step 20") })
        #expect(lines.last { !$0.isEmpty }.map { $0.replacingOccurrences(of: "\u{1B}[K", with: "").split(separator: "\r").last?.hasPrefix("done: ") ?? false } == true,
                "\(lines.suffix(3))")
    }

    @Test func plainLinesQuietAndJSON() throws {
        let dir = try TrainCommandTests.scratch()
        defer { try? FileManager.default.removeItem(at: dir) }
        let plain = try TrainCommandTests.run(Self.run, in: dir)
        #expect(plain.status == 0, "\(plain.stderr)")
        #expect(!plain.stdout.contains("\r") && !plain.stdout.contains("\u{1B}"))
        let steps = plain.stdout.split(separator: "\n").filter { $0.hasPrefix("step ") }
        #expect(steps.count == 6 && steps.allSatisfy { $0.count <= ProgressText.columns }, "\(steps)")

        let quiet = try TrainCommandTests.run(Self.run + ["--overwrite", "--quiet"], in: dir)
        #expect(quiet.status == 0 && quiet.stdout.split(separator: "\n").count == 1 && quiet.stdout.hasPrefix("done: "), "\(quiet.stdout)")

        let json = try TrainCommandTests.run(Self.run + ["--overwrite", "--json"], in: dir)
        #expect(json.status == 0, "\(json.stderr)")
        let events = json.stdout.split(separator: "\n").map { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        #expect(events.allSatisfy { $0?["event"] is String }, "\(json.stdout)")
        let names = events.compactMap { $0?["event"] as? String }
        #expect(names.first == "started" && names.last == "finished" && names.filter { $0 == "progress" }.count == 6
                && names.contains("evaluation") && names.contains("checkpoint"), "\(names)")
        let both = try TrainCommandTests.run(Self.run + ["--overwrite", "--json", "--quiet"], in: dir)
        #expect(both.status == 2 && both.stderr.contains("--quiet"))
    }

    @Test func divergenceIsOneLineWithAdviceForTheConfiguration() throws {
        // Adam at learning rate 10 moves every parameter by about 10 per step: the loss overflows within
        // a few steps with or without clipping, whatever the rounding of the kernels (SGD at that rate
        // may or may not overflow, depending on it).
        let dir = try TrainCommandTests.scratch()
        defer { try? FileManager.default.removeItem(at: dir) }
        let base = ["train", "--task", "adding", "--length", "16", "--dimensions", "8", "--hidden", "8", "--batch-size", "4", "--threads", "1",
                    "--steps", "50", "--optimizer", "adam", "--learning-rate", "10", "--train-size", "64", "--val-size", "8", "--test-size", "8"]
        for (extra, advice) in [(["--clip-norm", "0"], "clip gradients (--clip-norm 1)"), ([], "--clip-norm (now 1.0)")] {
            let r = try TrainCommandTests.run(base + extra + ["--output", "run\(extra.count)"], in: dir)
            let lines = r.stderr.split(separator: "\n")
            #expect(r.status == 1 && lines.count == 1 && lines[0].hasPrefix("error: training diverged: ") && lines[0].contains(" at step ")
                    && lines[0].contains("the last good checkpoint is kept in ") && lines[0].contains(advice), "\(r.stderr)")
        }
    }

    @Test func progressLinesFitOneHundredColumns() {
        // The widest values: seven-digit steps, a language model's bits per byte, the gradient norm, hours.
        let line = ProgressText.progressLine(step: 1_234_567, total: 9_999_999, epoch: 12345, loss: 123.456789, accuracy: 0.123456,
                                             bitsPerByte: 12.3456, gradientNorm: 1234.567, rate: ProgressText.rate(123_456.7, "tok/s"),
                                             elapsed: 360_000, eta: 3_600_000)
        #expect(line.count <= 100 && line.hasPrefix("step 1234567/9999999") && line.contains("loss 123.45679"), "\(line)")
        let narrow = ProgressText.progressLine(step: 5, total: 60, epoch: 0, loss: 0.5, accuracy: 0.25, bitsPerByte: nil, gradientNorm: 0.9,
                                               rate: "120 seq/s", elapsed: 1, eta: 12, columns: 40)
        #expect(narrow.count <= 40 && narrow.hasPrefix("step  5/60") && narrow.contains("loss"), "\(narrow)")
    }

    @Test func plainLinesSayWhereASlowRunStandsOncePerMinute() {
        var now = 0.0, lines: [String] = []
        let reporter = ConsoleReporter(clock: { now }, write: { lines.append($0) })
        func step(_ k: Int, at time: Double) {
            now = time
            reporter.report(.step(LiveStatus(step: k, totalSteps: 300, epoch: 0, loss: 0.5, accuracy: 0.25, rate: 2, rateUnit: "seq/s",
                                             elapsedSeconds: time, etaSeconds: 100)))
        }
        step(1, at: 30); step(2, at: 59.9)
        #expect(lines.isEmpty, "\(lines)")
        step(3, at: 61); step(4, at: 100)
        #expect(lines.count == 1 && lines[0].hasPrefix("step   3/300") && lines[0].contains("ETA"), "\(lines)")
        // A long evaluation: a line once a minute, none for its last batch (the result line follows).
        for batch in 1...10 {
            now = 100 + Double(batch) * 15
            reporter.report(.evaluating(split: .validation, done: batch, total: 10))
        }
        #expect(Array(lines.dropFirst()) == ["validation: batch 2/10", "validation: batch 6/10"], "\(lines)")
    }
}
