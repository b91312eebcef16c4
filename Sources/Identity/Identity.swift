// Identity module placeholder; replaced by its implementation.
