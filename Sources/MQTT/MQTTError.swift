import CMosquitto
import Foundation

/// Every failure of this module: what was attempted, the libmosquitto code (MOSQ_ERR_*, CONNACK or
/// PUBACK reason code) and libmosquitto's own text (`mosquitto_strerror` / `mosquitto_reason_string`).
public struct MQTTError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        /// TCP connect or DNS failed: check host, port and that the broker runs.
        case unreachable
        /// The broker refused the CONNECT (bad credentials, client id, ...) or a publish (PUBACK reason >= 0x80).
        case refused
        /// The broker's ACL denied the operation (MQTT 5 PUBACK reason 135).
        case notAuthorized
        /// TLS handshake or certificate verification failed on either side.
        case tls
        case timeout
        case protocolError
        /// Not connected, connection lost, or the client was disconnected while waiting.
        case disconnected
        case invalidArgument
        case library
    }

    public let kind: Kind
    public let operation: String
    /// MOSQ_ERR_* for library calls; the CONNACK/PUBACK reason code for broker refusals; 0 otherwise.
    public let code: Int32
    public let message: String

    public init(kind: Kind, operation: String, code: Int32, message: String) {
        self.kind = kind
        self.operation = operation
        self.code = code
        self.message = message
    }

    public var description: String {
        "MQTT \(operation) failed (\(kind), code \(code)): \(message)"
    }
}

extension MQTTError {
    /// Converts a libmosquitto return code; `savedErrno` must be read right after the failing call.
    static func library(_ operation: String, _ rc: Int32, errno savedErrno: Int32 = 0, connecting: Bool = false,
                        tls: Bool = false) -> MQTTError {
        var text = String(cString: mosquitto_strerror(rc))
        if rc == MOSQ_ERR_ERRNO.rawValue && savedErrno != 0 {
            text = String(cString: strerror(savedErrno)) + " (errno \(savedErrno))"
        }
        let kind: Kind
        switch rc {
        case MOSQ_ERR_NO_CONN.rawValue, MOSQ_ERR_CONN_LOST.rawValue, MOSQ_ERR_KEEPALIVE.rawValue:
            kind = (connecting && tls) ? .tls : .disconnected
        case MOSQ_ERR_CONN_REFUSED.rawValue: kind = .refused
        case MOSQ_ERR_TLS.rawValue, MOSQ_ERR_TLS_HANDSHAKE.rawValue, MOSQ_ERR_OCSP.rawValue: kind = .tls
        case MOSQ_ERR_AUTH.rawValue, MOSQ_ERR_ACL_DENIED.rawValue: kind = .notAuthorized
        case MOSQ_ERR_INVAL.rawValue, MOSQ_ERR_PAYLOAD_SIZE.rawValue, MOSQ_ERR_MALFORMED_UTF8.rawValue,
             MOSQ_ERR_NOT_SUPPORTED.rawValue, MOSQ_ERR_OVERSIZE_PACKET.rawValue,
             MOSQ_ERR_QOS_NOT_SUPPORTED.rawValue, MOSQ_ERR_RETAIN_NOT_SUPPORTED.rawValue:
            kind = .invalidArgument
        case MOSQ_ERR_PROTOCOL.rawValue, MOSQ_ERR_MALFORMED_PACKET.rawValue, MOSQ_ERR_DUPLICATE_PROPERTY.rawValue:
            kind = .protocolError
        case MOSQ_ERR_EAI.rawValue, MOSQ_ERR_LOOKUP.rawValue: kind = .unreachable
        case MOSQ_ERR_TIMEOUT.rawValue: kind = .timeout
        case MOSQ_ERR_ERRNO.rawValue:
            switch savedErrno {
            case EPROTO: kind = .tls
            case ECONNREFUSED, EHOSTUNREACH, ENETUNREACH, ETIMEDOUT, EADDRNOTAVAIL: kind = .unreachable
            case ECONNRESET, EPIPE: kind = (connecting && tls) ? .tls : .disconnected
            default: kind = connecting ? .unreachable : .library
            }
        default: kind = .library
        }
        return MQTTError(kind: kind, operation: operation, code: rc, message: text)
    }

    /// A refused CONNACK, described with `mosquitto_connack_string` (3.1.1) or `mosquitto_reason_string` (5).
    static func connack(_ reason: Int32, version: MQTTVersion) -> MQTTError {
        let text = version == .v5 ? String(cString: mosquitto_reason_string(reason))
                                  : String(cString: mosquitto_connack_string(reason))
        return MQTTError(kind: .refused, operation: "connect (CONNACK)", code: reason,
                         message: "broker refused the connection: \(text)")
    }

    /// A PUBACK reason code >= 0x80 (MQTT 5).
    static func puback(_ reason: Int32, topic: String) -> MQTTError {
        let text = String(cString: mosquitto_reason_string(reason))
        return MQTTError(kind: reason == 0x87 ? .notAuthorized : .refused, operation: "publish to \(topic)",
                         code: reason, message: "broker rejected the message: \(text)")
    }

    static func disconnected(_ operation: String, _ message: String) -> MQTTError {
        MQTTError(kind: .disconnected, operation: operation, code: MOSQ_ERR_NO_CONN.rawValue, message: message)
    }

    static func invalid(_ operation: String, _ message: String) -> MQTTError {
        MQTTError(kind: .invalidArgument, operation: operation, code: MOSQ_ERR_INVAL.rawValue, message: message)
    }
}
