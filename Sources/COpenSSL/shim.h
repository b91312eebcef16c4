#ifndef ESCROWFLEET_COPENSSL_SHIM_H
#define ESCROWFLEET_COPENSSL_SHIM_H
#include <openssl/evp.h>
#include <openssl/ec.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <openssl/err.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/buffer.h>
#include <openssl/ssl.h>
#include <openssl/hmac.h>
#include <openssl/core_names.h>
#include <openssl/params.h>

// Only what Swift cannot call directly: macros and variadic functions.

/// `OPENSSL_free` is a macro over CRYPTO_free(ptr, __FILE__, __LINE__).
static inline void escrow_openssl_free(void *p) { OPENSSL_free(p); }

/// `BIO_get_mem_data` is a macro over BIO_ctrl.
static inline long escrow_bio_get_mem_data(BIO *b, char **pp) { return BIO_get_mem_data(b, pp); }

/// `EVP_EC_gen` is a macro over the variadic EVP_PKEY_Q_keygen.
static inline EVP_PKEY *escrow_ec_p256_generate(void) { return EVP_EC_gen("P-256"); }

/// `SSL_CTX_set_mode` is a macro over SSL_CTX_ctrl.
static inline long escrow_ssl_ctx_set_mode(SSL_CTX *ctx, long mode) { return SSL_CTX_set_mode(ctx, mode); }

/// `SSL_CTX_set_min_proto_version` is a macro over SSL_CTX_ctrl.
static inline int escrow_ssl_ctx_set_min_proto_version(SSL_CTX *ctx, int version) {
    return (int)SSL_CTX_set_min_proto_version(ctx, version);
}

/// `SSL_set_tlsext_host_name` (SNI) is a macro over SSL_ctrl.
static inline int escrow_ssl_set_tlsext_host_name(SSL *ssl, const char *name) {
    return (int)SSL_set_tlsext_host_name(ssl, name);
}

/// `BIO_set_mem_eof_return` is a macro over BIO_ctrl.
static inline long escrow_bio_set_mem_eof_return(BIO *b, long value) { return BIO_set_mem_eof_return(b, value); }

/// `BIO_get_mem_ptr` is a macro over BIO_ctrl.
static inline long escrow_bio_get_mem_ptr(BIO *b, BUF_MEM **pp) { return BIO_get_mem_ptr(b, pp); }

/// A P-256 key pair from its raw parts: the private scalar (native byte order, as
/// BN_bn2nativepad writes it) and the uncompressed public point. In C because the
/// OSSL_PARAM array keeps pointers to the parameter names (macros) past each call.
/// 5x faster than d2i_PrivateKey, which runs OpenSSL 3's decoder framework.
static inline EVP_PKEY *escrow_ec_p256_from_raw(const unsigned char *priv_native, size_t priv_length,
                                                const unsigned char *pub, size_t pub_length) {
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    if (ctx == NULL) return NULL;
    OSSL_PARAM params[4];
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)"prime256v1", 0);
    params[1] = OSSL_PARAM_construct_BN(OSSL_PKEY_PARAM_PRIV_KEY, (unsigned char *)priv_native, priv_length);
    params[2] = OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, (void *)pub, pub_length);
    params[3] = OSSL_PARAM_construct_end();
    EVP_PKEY *key = NULL;
    if (EVP_PKEY_fromdata_init(ctx) != 1 || EVP_PKEY_fromdata(ctx, &key, EVP_PKEY_KEYPAIR, params) != 1) key = NULL;
    EVP_PKEY_CTX_free(ctx);
    return key;
}

#endif
