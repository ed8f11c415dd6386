@_exported import LongMixerNN
