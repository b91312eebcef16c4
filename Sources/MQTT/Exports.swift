// The client speaks the vocabulary of the pure codec module: one QoS, one MQTTVersion, one
// MQTTProperties for libmosquitto's client, fleetsim's engine and escrowbench.
@_exported import MQTTWire
