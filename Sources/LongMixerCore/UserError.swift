/// A mistake in what the user gave (an option, a file, a configuration) or a failure of the
/// environment, reported as one line: `error: <what> (<value>): <why>; <what to do>`.
///
/// Every error that can reach a user is one of these (or converts to one at the CLI), so messages
/// look alike everywhere and the exit code says whose fault it was: 2 for usage errors (fix the
/// command line or the input), 1 for runtime failures (the run itself failed).
public struct UserError: Error, CustomStringConvertible, Equatable, Sendable {
    public enum Kind: Sendable, Equatable {
        /// The command line, a configuration or an input file is wrong: exit code 2.
        case usage
        /// A valid request failed while running (disk full, divergence, a child process died): exit code 1.
        case runtime
    }

    public let kind: Kind
    /// What is wrong: an option (`--length`), a file, a field (`config.json: layers`), a tensor name.
    public let what: String
    /// The offending value as given, if there is one.
    public let value: String?
    /// Why it is wrong.
    public let why: String
    /// What to do about it, if something can be said.
    public let remedy: String?

    public init(_ kind: Kind = .usage, what: String, value: String? = nil, why: String, remedy: String? = nil) {
        self.kind = kind
        self.what = what
        self.value = value
        self.why = why
        self.remedy = remedy
    }

    /// `<what> (<value>): <why>; <remedy>` — the CLI prefixes `error: `.
    public var description: String {
        var line = what
        if let value { line += " (\(value))" }
        line += ": " + why
        if let remedy, !remedy.isEmpty { line += "; " + remedy }
        return line
    }

    public var exitCode: Int32 { kind == .usage ? 2 : 1 }
}
