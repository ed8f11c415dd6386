@_exported import LongMixerModels
@_exported import LongMixerData
