import Foundation
import Testing
import LongMixerCore
import LongMixerBenchmarks
import LongMixerTestSupport

/// The option vocabulary shared by every `longmixer bench` subcommand: parsing, and refusals that are
/// one usage line (exit 2) before anything is timed.
@Suite("bench options")
struct BenchOptionsTests {
    @Test func lengthsAreCommaSeparatedDistinctIntegers() throws {
        #expect(try BenchArguments.lengths("128, 1024,4096") == [128, 1024, 4096])
        for bad in ["", "1024,", "abc", "1", "1024,1024", "12.5"] {
            #expect(throws: UserError.self, "\(bad)") { try BenchArguments.lengths(bad) }
        }
        let e = try #require(throws: UserError.self) { try BenchArguments.lengths("64,x") }
        #expect(e.what == "--lengths" && e.exitCode == 2)
    }

    @Test func threadsDefaultToAllCoresAndSingleBenchmarksRefuseALists() throws {
        #expect(try BenchArguments.threads(nil, single: true, cores: 2) == [2])
        #expect(try BenchArguments.threads("1,2", single: false, cores: 2) == [1, 2])
        let list = try #require(throws: UserError.self) { try BenchArguments.threads("1,2", single: true, cores: 2) }
        #expect(list.what == "--threads" && list.why.contains("one thread count"))
        // The cap of RuntimeOptions (4 × cores) applies here too.
        #expect(throws: UserError.self) { try BenchArguments.threads("9", single: true, cores: 2) }
        #expect(throws: UserError.self) { try BenchArguments.threads("0", single: false, cores: 2) }
    }

    @Test func namesAreCheckedAgainstTheValidOnes() throws {
        #expect(try BenchArguments.names("Transformer,performer", option: "--models", valid: ["transformer", "performer"])
                == ["transformer", "performer"])
        let e = try #require(throws: UserError.self) {
            try BenchArguments.names("transformer,mamba", option: "--models", valid: ["transformer", "performer"])
        }
        #expect(e.value == "mamba" && e.remedy?.contains("performer") == true)
        #expect(throws: UserError.self) { try BenchArguments.names("performer,,", option: "--models", valid: ["performer"]) }
    }

    @Test func interpreterComesFromTheOptionThenTheEnvironmentThenPython3() {
        #expect(TorchInterpreter.resolve(option: "/x/python", environment: "/y/python") == TorchInterpreter(path: "/x/python", source: "--python"))
        #expect(TorchInterpreter.resolve(option: nil, environment: "/y/python") == TorchInterpreter(path: "/y/python", source: "LONGMIXER_TORCH_PYTHON"))
        #expect(TorchInterpreter.resolve(option: nil, environment: nil).path == "python3")
    }

    /// A missing interpreter, and one without torch, are each named with what is missing.
    @Test func torchCheckSaysWhatIsMissing() throws {
        let dir = try LongMixerCLI.scratch()
        defer { try? FileManager.default.removeItem(at: dir) }
        let missing = try #require(throws: UserError.self) {
            try TorchSide.check(TorchInterpreter(path: dir.appendingPathComponent("no-python").path, source: "--python"))
        }
        #expect(missing.what == "--python" && missing.why.contains("no Python interpreter") && missing.exitCode == 2)

        let fake = dir.appendingPathComponent("python-without-torch")
        try Data("#!/bin/sh\necho \"ModuleNotFoundError: No module named 'torch'\" >&2\nexit 1\n".utf8).write(to: fake)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: fake.path)
        let noTorch = try #require(throws: UserError.self) {
            try TorchSide.check(TorchInterpreter(path: fake.path, source: "LONGMIXER_TORCH_PYTHON"))
        }
        #expect(noTorch.what == "LONGMIXER_TORCH_PYTHON" && noTorch.why.contains("No module named 'torch'"))
        #expect(noTorch.remedy?.contains("--python") == true)
    }

    /// Refusals through the executable: one `error:` line on stderr, exit 2, nothing timed.
    @Test(arguments: [
        (["bench", "attention", "--threads", "1,2"], "--threads"),
        (["bench", "attention", "--batch", "2"], "--batch"),
        (["bench", "core", "--threads-list", "1,2"], "--threads-list"),
        (["bench", "paramixer", "--python", "python3"], "--python"),
        (["bench", "paramixer", "--lengths", "1024,abc"], "--lengths"),
        (["bench", "attention", "--torch", "--python", "./no-such-python"], "./no-such-python"),
        (["bench", "attention", "--mixers", "transformer,mamba"], "mamba"),
    ])
    func refusalsAreOneUsageLine(arguments: [String], named: String) throws {
        let dir = try LongMixerCLI.scratch()
        defer { try? FileManager.default.removeItem(at: dir) }
        let r = try LongMixerCLI.run(arguments, in: dir, timeout: 120)
        #expect(r.status == 2, "\(arguments): exit \(r.status): \(r.stderr)")
        let lines = r.stderr.split(separator: "\n")
        #expect(lines.count == 1 && lines[0].hasPrefix("error: ") && lines[0].contains(named), "\(arguments): \(r.stderr)")
        #expect(r.stdout.isEmpty, "\(arguments) printed: \(r.stdout.prefix(200))")
    }
}
