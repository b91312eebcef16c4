// OperatorCLI module placeholder; replaced by its implementation.
