import LongMixerCore
import LongMixerData
import LongMixerNN

/// A model mapping a batch of sequences to per-sequence outputs [B, C] (class logits, or
/// regression values). Trainers, evaluators and benchmarks depend only on this.
public protocol SequenceModel: Module {
    func callAsFunction(_ input: SequenceInput) -> Variable
}
