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

// Only what Swift cannot call directly: macros and variadic functions.

/// `OPENSSL_free` is a macro over CRYPTO_free(ptr, __FILE__, __LINE__).
static inline void escrow_openssl_free(void *p) { OPENSSL_free(p); }

/// `BIO_get_mem_data` is a macro over BIO_ctrl.
static inline long escrow_bio_get_mem_data(BIO *b, char **pp) { return BIO_get_mem_data(b, pp); }

/// `EVP_EC_gen` is a macro over the variadic EVP_PKEY_Q_keygen.
static inline EVP_PKEY *escrow_ec_p256_generate(void) { return EVP_EC_gen("P-256"); }

#endif
