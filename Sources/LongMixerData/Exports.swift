@_exported import LongMixerCore
