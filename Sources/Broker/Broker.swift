// Broker module placeholder; replaced by its implementation.
