// MQTT module placeholder; replaced by its implementation.
