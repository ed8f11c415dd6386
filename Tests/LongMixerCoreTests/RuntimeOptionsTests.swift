import Foundation
import Testing
@testable import LongMixerCore

/// Every LONGMIXER_* variable has a range; a value outside it is one UserError, never a trap and
/// never silently ignored.
@Suite("RuntimeOptions")
struct RuntimeOptionsTests {
    func parse(_ environment: [String: String], cores: Int = 2) -> (options: RuntimeOptions, errors: [UserError]) {
        RuntimeOptions.parse(environment, cores: cores, physicalMemoryBytes: 24 << 30)
    }

    @Test("valid values are read; unset and empty mean the default")
    func validValues() {
        let (o, errors) = parse(["LONGMIXER_THREADS": "3", "LONGMIXER_GEMM": "OpenBLAS", "LONGMIXER_NO_AVX512": "1",
                                 "LONGMIXER_NO_STREAMING": "0", "LONGMIXER_POOL_MB": "0", "LONGMIXER_TORCH_PYTHON": "/usr/bin/python3",
                                 "LONGMIXER_SLOW_TESTS": "1", "LONGMIXER_PORTABLE": "1", "PATH": "/bin"])
        #expect(errors.isEmpty, "\(errors)")
        #expect(o.threads == 3 && o.gemm == .openblas && o.noAVX512 && !o.noStreaming && o.poolMegabytes == 0)
        #expect(o.torchPython == "/usr/bin/python3")
        let (defaults, none) = parse(["LONGMIXER_THREADS": "", "LONGMIXER_GEMM": " "])
        #expect(none.isEmpty && defaults == RuntimeOptions())
        #expect(parse(["LONGMIXER_THREADS": "8"]).options.threads == 8)       // 4 × 2 cores
    }

    @Test("bad values are one error each, naming the variable and the value", arguments: [
        ("LONGMIXER_THREADS", "9999999999"), ("LONGMIXER_THREADS", "abc"), ("LONGMIXER_THREADS", "0"), ("LONGMIXER_THREADS", "-1"),
        ("LONGMIXER_THREADS", "9"), ("LONGMIXER_THREADS", "1.5"), ("LONGMIXER_GEMM", "fast"), ("LONGMIXER_NO_AVX512", "yes"),
        ("LONGMIXER_NO_STREAMING", "2"), ("LONGMIXER_POOL_MB", "-1"), ("LONGMIXER_POOL_MB", "lots"), ("LONGMIXER_POOL_MB", "99999999999"),
        ("LONGMIXER_THREAD", "2"),
    ])
    func badValues(name: String, value: String) {
        let (options, errors) = parse([name: value])
        #expect(errors.count == 1)
        let e = errors.first
        #expect(e?.kind == .usage && e?.exitCode == 2)
        #expect(e?.what == name && e?.value == value)
        #expect(e?.description.hasPrefix("\(name) (\(value)): ") == true, "\(String(describing: e))")
        #expect(options == RuntimeOptions())      // the default stands in, so library code keeps working
    }

    @Test("thread counts (flag and variable) are capped at 4 × cores")
    func threadCap() throws {
        #expect(RuntimeOptions.maximumThreads(cores: 2) == 8)
        #expect(try RuntimeOptions.validatedThreadCount(8, what: "--threads", cores: 2) == 8)
        for bad in [0, -1, 9, 100_000, Int.max] {
            let e = #expect(throws: UserError.self) { try RuntimeOptions.validatedThreadCount(bad, what: "--threads", cores: 2) }
            #expect(e?.description.contains("between 1 and 8") == true)
        }
    }

    /// On the code before RuntimeOptions this trapped (`Int32(n)` on a 10-digit thread count).
    @Test("a huge LONGMIXER_THREADS no longer traps the library; the error is kept for the CLI")
    func hugeThreadCountDoesNotTrap() async {
        await #expect(processExitsWith: .success) {
            setenv("LONGMIXER_THREADS", "9999999999", 1)
            let n = Parallel.threadCount
            let ok = n >= 1 && n <= RuntimeOptions.maximumThreads() && RuntimeOptions.environmentErrors.map(\.what) == ["LONGMIXER_THREADS"]
            exit(ok ? 0 : 3)
        }
    }

    @Test("a bad LONGMIXER_GEMM no longer traps the library")
    func badGemmDoesNotTrap() async {
        await #expect(processExitsWith: .success) {
            setenv("LONGMIXER_GEMM", "bogus", 1)
            let ok = BLAS.gemmBackend == .auto && RuntimeOptions.environmentErrors.map(\.what) == ["LONGMIXER_GEMM"]
            exit(ok ? 0 : 3)
        }
    }
}
