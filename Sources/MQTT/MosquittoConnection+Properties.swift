import CMosquitto
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// MQTT 5 properties between `MQTTProperties` and libmosquitto's property lists.
extension MosquittoConnection {
    // MARK: Properties

    static func readProperties(_ props: OpaquePointer?) -> MQTTProperties {
        guard let props else { return MQTTProperties() }
        var responseTopic: String?, correlationData: [UInt8]?, userProperties: [(String, String)] = []
        var text: UnsafeMutablePointer<CChar>?
        if mosquitto_property_read_string(props, Int32(MQTT_PROP_RESPONSE_TOPIC.rawValue), &text, false) != nil,
           let text {
            responseTopic = String(cString: text)
            free(text)
        }
        var data: UnsafeMutableRawPointer?
        var length: UInt16 = 0
        if mosquitto_property_read_binary(props, Int32(MQTT_PROP_CORRELATION_DATA.rawValue), &data, &length, false) != nil {
            correlationData = data.map { Array(UnsafeRawBufferPointer(start: $0, count: Int(length))) } ?? []
            free(data)
        }
        var cursor: OpaquePointer? = props
        var skipFirst = false
        while let current = cursor {
            var name: UnsafeMutablePointer<CChar>?
            var value: UnsafeMutablePointer<CChar>?
            cursor = mosquitto_property_read_string_pair(current, Int32(MQTT_PROP_USER_PROPERTY.rawValue),
                                                         &name, &value, skipFirst)
            if cursor != nil, let name, let value {
                userProperties.append((String(cString: name), String(cString: value)))
            }
            free(name)
            free(value)
            skipFirst = true
        }
        return MQTTProperties(responseTopic: responseTopic, correlationData: correlationData, userProperties: userProperties)
    }

    /// Builds a libmosquitto property list (caller frees with `mosquitto_property_free_all`).
    static func makeProperties(_ properties: MQTTProperties) throws -> OpaquePointer? {
        var list: OpaquePointer?
        func check(_ rc: Int32, _ what: String) throws {
            guard rc == MOSQ_ERR_SUCCESS.rawValue else {
                mosquitto_property_free_all(&list)
                throw MQTTError.library("add MQTT 5 property \(what)", rc)
            }
        }
        if let topic = properties.responseTopic {
            try check(mosquitto_property_add_string(&list, Int32(MQTT_PROP_RESPONSE_TOPIC.rawValue), topic), "response topic")
        }
        if let data = properties.correlationData {
            guard data.count <= 65535 else { throw MQTTError.invalid("publish", "correlation data exceeds 65535 bytes") }
            let rc = data.withUnsafeBytes {
                mosquitto_property_add_binary(&list, Int32(MQTT_PROP_CORRELATION_DATA.rawValue), $0.baseAddress, UInt16($0.count))
            }
            try check(rc, "correlation data")
        }
        for (name, value) in properties.userProperties {
            try check(mosquitto_property_add_string_pair(&list, Int32(MQTT_PROP_USER_PROPERTY.rawValue), name, value),
                      "user property \(name)")
        }
        return list
    }
}
