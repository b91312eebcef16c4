// Storage module placeholder; replaced by its implementation.
