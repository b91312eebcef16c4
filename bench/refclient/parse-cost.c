/* What a device identity costs to parse with OpenSSL 3.0, per call and in heap bytes.
 * Built and run by bench/openssl-parse-cost.sh (which makes the P-256 key and certificate).
 * fleetsim's --tls-identities compact holds DER + the raw key and rebuilds both at each
 * connect; these figures are why it uses d2i_X509 and EVP_PKEY_fromdata, not the PEM readers. */
#include <malloc.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define N 2000

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }

static unsigned char *slurp(const char *path, long *n) {
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); exit(1); }
    fseek(f, 0, SEEK_END); *n = ftell(f); rewind(f);
    unsigned char *b = malloc(*n);
    if (fread(b, 1, *n, f) != (size_t)*n) { perror(path); exit(1); }
    fclose(f);
    return b;
}

static void *objects[N];

static void report(const char *what, double started, size_t heap_before) {
    printf("%-44s %7.1f us  %6zu B heap each\n", what, (now() - started) / N * 1e6, (mallinfo2().uordblks - heap_before) / N);
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: parse-cost DIR (with c.pem, c.der, k.pem, k.der)\n"); return 64; }
    char path[4096]; long cpem, cder, kpem, kder;
    snprintf(path, sizeof path, "%s/c.pem", argv[1]); unsigned char *cp = slurp(path, &cpem);
    snprintf(path, sizeof path, "%s/c.der", argv[1]); unsigned char *cd = slurp(path, &cder);
    snprintf(path, sizeof path, "%s/k.pem", argv[1]); unsigned char *kp = slurp(path, &kpem);
    snprintf(path, sizeof path, "%s/k.der", argv[1]); unsigned char *kd = slurp(path, &kder);
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method()); /* as in a TLS client: more providers' methods are loaded */
    double t; size_t h; int i;

    h = mallinfo2().uordblks; t = now();
    for (i = 0; i < N; i++) { BIO *b = BIO_new_mem_buf(cp, (int)cpem); objects[i] = PEM_read_bio_X509(b, NULL, NULL, NULL); BIO_free(b); }
    report("certificate, PEM_read_bio_X509", t, h);
    h = mallinfo2().uordblks; t = now();
    for (i = 0; i < N; i++) { const unsigned char *p = cd; objects[i] = d2i_X509(NULL, &p, cder); }
    report("certificate, d2i_X509", t, h);
    h = mallinfo2().uordblks; t = now();
    for (i = 0; i < N; i++) { BIO *b = BIO_new_mem_buf(kp, (int)kpem); objects[i] = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL); BIO_free(b); }
    report("key, PEM_read_bio_PrivateKey (PKCS#8)", t, h);
    h = mallinfo2().uordblks; t = now();
    for (i = 0; i < N; i++) { const unsigned char *p = kd; objects[i] = d2i_PrivateKey(EVP_PKEY_EC, NULL, &p, kder); }
    report("key, d2i_PrivateKey(EC) (PKCS#8 DER)", t, h);

    EVP_PKEY *key = objects[0];
    BIGNUM *bn = NULL; unsigned char scalar[32], point[65]; size_t point_length = 0;
    if (!EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_PRIV_KEY, &bn) || BN_bn2nativepad(bn, scalar, 32) != 32 ||
        !EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_PUB_KEY, point, sizeof point, &point_length)) {
        fprintf(stderr, "cannot export the raw key\n"); return 1;
    }
    h = mallinfo2().uordblks; t = now();
    for (i = 0; i < N; i++) {
        EVP_PKEY_CTX *kctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
        OSSL_PARAM params[4] = {
            OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)"prime256v1", 0),
            OSSL_PARAM_construct_BN(OSSL_PKEY_PARAM_PRIV_KEY, scalar, 32),
            OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, point, point_length),
            OSSL_PARAM_construct_end(),
        };
        EVP_PKEY *out = NULL;
        if (EVP_PKEY_fromdata_init(kctx) != 1 || EVP_PKEY_fromdata(kctx, &out, EVP_PKEY_KEYPAIR, params) != 1) { fprintf(stderr, "fromdata failed\n"); return 1; }
        EVP_PKEY_CTX_free(kctx);
        objects[i] = out;
    }
    report("key, EVP_PKEY_fromdata (raw scalar + point)", t, h);
    printf("(%d of each, held until the end; OpenSSL %s)\n", N, OpenSSL_version(OPENSSL_VERSION_STRING));
    BN_free(bn);
    SSL_CTX_free(ctx);
    return 0;
}
