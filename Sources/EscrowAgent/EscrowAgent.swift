// EscrowAgent module placeholder; replaced by its implementation.
