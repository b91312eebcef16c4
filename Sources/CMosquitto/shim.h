#ifndef ESCROWFLEET_CMOSQUITTO_SHIM_H
#define ESCROWFLEET_CMOSQUITTO_SHIM_H
#include <mosquitto.h>
#include <mqtt_protocol.h>
#endif
