import ArgumentParser
import Foundation
import LongMixerTraining
import LongMixerCore
import LongMixerNN
import LongMixerModels
import LongMixerData

/// `longmixer generate`: sample bytes from a trained byte-level LM, streamed to stdout.
struct GenerateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Continue a prompt with a trained byte-level language model (recurrent state, O(1) memory per token).",
        discussion: """
            Loads the model of a `longmixer train --task lm` run directory (config.json + model.safetensors), or \
            --weights FILE with --config FILE (a run's config.json or a LanguageModelConfiguration JSON), feeds \
            the prompt's UTF-8 bytes and writes the sampled bytes to stdout as they are produced.

            Example:
              longmixer generate --run runs/lm-permuteformer-… --prompt "ROMEO:" --tokens 200 --temperature 0.8 --top-k 40
            """)

    @Option(name: .customLong("run"), help: "Run directory of a language-model training run.")
    var runDirectory: String?

    @Option(help: "Weights file (.safetensors); needs --config.")
    var weights: String?

    @Option(help: "Configuration JSON for --weights.")
    var config: String?

    @Option(help: "Prompt text (at least one byte).")
    var prompt: String = "\n"

    @Option(help: "Bytes to generate.")
    var tokens: Int = 200

    @Option(help: "Sampling temperature; 0 is greedy.")
    var temperature: Float = 1

    @Option(help: "Sample only among the K most likely bytes (0: all).")
    var topK: Int = 0

    @Option(help: "Sampling seed.")
    var seed: UInt64 = 0

    @Flag(help: "Do not echo the prompt before the continuation.")
    var noEcho = false

    @OptionGroup var threadOptions: ThreadOptions

    func run() throws {
        do { try threadOptions.apply() } catch let e as ValidationError { throw CommandError(e.message) }
        guard tokens >= 0 else { throw CommandError("--tokens must be ≥ 0, got \(tokens)") }
        guard temperature >= 0 && temperature.isFinite else { throw CommandError("--temperature must be ≥ 0, got \(temperature)") }
        guard topK >= 0 else { throw CommandError("--top-k must be ≥ 0, got \(topK)") }
        guard !prompt.isEmpty else { throw CommandError("--prompt must hold at least one byte") }
        let model: CausalLanguageModel
        do {
            switch (runDirectory, weights, config) {
            case (let dir?, nil, nil): model = try CausalLanguageModel.load(runDirectory: URL(fileURLWithPath: dir))
            case (nil, let w?, let c?): model = try CausalLanguageModel.load(weights: URL(fileURLWithPath: w), config: URL(fileURLWithPath: c))
            case (nil, _?, nil): throw CommandError("--weights needs --config")
            case (nil, nil, _?): throw CommandError("--config needs --weights")
            case (nil, nil, nil): throw CommandError("give --run DIR, or --weights FILE with --config FILE")
            default: throw CommandError("give either --run or --weights/--config, not both")
            }
        } catch let e as LanguageModelRunError { throw CommandError(e.message) }
        let out = FileHandle.standardOutput
        if !noEcho { out.write(Data(prompt.utf8)) }
        do {
            try model.sampleBytes(prompt: ByteCorpus.tokens(prompt), count: tokens, temperature: temperature, topK: topK, seed: seed) { token in
                out.write(Data([UInt8(token - ByteCorpus.tokenOffset)]))
            }
        } catch let e as LanguageModelRunError { throw CommandError(e.message) }
        out.write(Data("\n".utf8))
    }
}
