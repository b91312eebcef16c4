// ControlPlane module placeholder; replaced by its implementation.
