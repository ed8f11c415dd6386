import Foundation
import LongMixerWideKernels

/// What the CPU (and kernel) support, read once from /proc/cpuinfo: Linux lists a feature only when
/// the OS also saves its registers, so "avx512f" there means AVX-512 code may run.
public enum CPUFeatures {
    /// The `flags` of the first processor in /proc/cpuinfo (empty where it cannot be read).
    public static let flags: Set<String> = {
        guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("flags") }),
              let colon = line.firstIndex(of: ":") else { return [] }
        return Set(line[line.index(after: colon)...].split(separator: " ").map(String.init))
    }()

    /// The 16-lane kernels of LongMixerWideKernels may run: that module was built for AVX-512 (not a
    /// LONGMIXER_PORTABLE=1 build), the CPU has the AVX-512 subsets it was built for, and
    /// LONGMIXER_NO_AVX512=1 is not set (to compare or rule out the wide path).
    public static let avx512: Bool = {
        if RuntimeOptions.environment.noAVX512 { return false }
        return WideKernels.compiledForAVX512 && ["avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"].allSatisfy(flags.contains)
    }()
}
