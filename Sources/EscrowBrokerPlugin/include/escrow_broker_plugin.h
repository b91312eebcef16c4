/*
 * escrow_broker_plugin.h: the EscrowFleet Mosquitto plugin's options.
 *
 * The plugin is loaded by the broker, not linked into any program: its entry
 * points (mosquitto_plugin_version, mosquitto_plugin_init,
 * mosquitto_plugin_cleanup) are declared by <mosquitto_plugin.h>. This header
 * only names its options so that the configuration writer and the plugin
 * agree; it includes nothing, so it can sit in a SwiftPM C target's include
 * directory. See ../README.md for the rules the plugin enforces.
 *
 *   plugin /path/to/libEscrowBrokerPlugin.so
 *   plugin_opt_acl_file /path/to/acl          (required: the broker's acl_file)
 *   plugin_opt_service_prefix svc-            (optional)
 *   plugin_opt_revoked_file /path/to/revoked  (optional: revoked certificate serials)
 *   plugin_opt_reload_topic escrow/broker/reloaded   (optional, with:)
 *   plugin_opt_reload_token_file /path/to/token      (the token each reload confirms)
 */

#ifndef ESCROW_BROKER_PLUGIN_H
#define ESCROW_BROKER_PLUGIN_H

/* Path of the ACL file, the same file as the broker's acl_file. Required. */
#define ESCROW_BROKER_PLUGIN_OPT_ACL_FILE "acl_file"

/* Usernames starting with this prefix may subscribe to $share/GROUP/... */
#define ESCROW_BROKER_PLUGIN_OPT_SERVICE_PREFIX "service_prefix"
#define ESCROW_BROKER_PLUGIN_DEFAULT_SERVICE_PREFIX "svc-"

/* Path of the revoked-serials file: one certificate serial per line, hex as
 * OpenSSL's BN_bn2hex prints it, lowercased; '#' comments and blank lines.
 * Optional: without it there is no revocation set. A client whose certificate
 * serial is listed is denied every access and disconnected. */
#define ESCROW_BROKER_PLUGIN_OPT_REVOKED_FILE "revoked_file"

/* Reload confirmation (both or neither): after every SIGHUP the plugin
 * publishes the first line of the token file (at most 128 bytes; empty when
 * the file cannot be read) on the reload topic, QoS 1, not retained. The
 * broker delivers it after the reload is complete (password file, ACL file,
 * certificates and the re-check of connected clients): escrowd writes a
 * growing token before each SIGHUP and answers a command that changed the
 * broker's access files once the token comes back, so the reply means "in
 * force". Only a login granted read access to the topic receives it. */
#define ESCROW_BROKER_PLUGIN_OPT_RELOAD_TOPIC "reload_topic"
#define ESCROW_BROKER_PLUGIN_OPT_RELOAD_TOKEN_FILE "reload_token_file"
#define ESCROW_BROKER_PLUGIN_RELOAD_TOKEN_MAX 128

/* The MQTT 5 user property the plugin appends to every PUBLISH on
 * accounts/+/cmd/+: the publisher's authenticated username. escrowd takes the
 * last one of that name as the command's sender (the audit log). */
#define ESCROW_BROKER_PLUGIN_OPERATOR_PROPERTY "escrow-operator"

#endif /* ESCROW_BROKER_PLUGIN_H */
