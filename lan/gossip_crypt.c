/* lan/gossip_crypt.c: gossip encryption with Consul's -encrypt key: AES-256-GCM through OpenSSL's
 * EVP interface, a fresh random nonce per packet, the version byte as additional data (layout
 * in gossip_msg.h). Separate from gossip_msg.c so that the decoder's fuzz build needs no
 * libcrypto. Thread-safe: no state besides OpenSSL's. */
#include "lan/gossip_msg.h"

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int dg_gossip_key_parse(const char *text, uint8_t key[DG_GOSSIP_KEY_LEN], char *err,
			size_t errlen)
{
	uint8_t *raw = NULL;
	size_t n = 0;
	if (!text || !text[0]) {
		snprintf(err, errlen, "gossip encryption key is empty");
		return DG_EINVAL;
	}
	if (dg_base64_decode(text, strlen(text), &raw, &n) != 0) {
		snprintf(err, errlen, "gossip encryption key is not valid base64");
		return DG_EINVAL;
	}
	if (n != DG_GOSSIP_KEY_LEN) {
		free(raw);
		snprintf(err, errlen,
			 "gossip encryption key must be %d bytes (AES-256), base64-encoded; got %zu "
			 "bytes",
			 DG_GOSSIP_KEY_LEN, n);
		return DG_EINVAL;
	}
	memcpy(key, raw, DG_GOSSIP_KEY_LEN);
	OPENSSL_cleanse(raw, n);
	free(raw);
	return 0;
}

int dg_gossip_key_generate(char *out, size_t outlen)
{
	uint8_t raw[DG_GOSSIP_KEY_LEN];
	if (outlen < 45)
		return DG_ETOOBIG;
	if (RAND_bytes(raw, sizeof(raw)) != 1)
		return DG_EIO;
	char *text = dg_base64_encode(raw, sizeof(raw));
	OPENSSL_cleanse(raw, sizeof(raw));
	if (!text)
		return DG_ENOMEM;
	snprintf(out, outlen, "%s", text);
	free(text);
	return 0;
}

int dg_gossip_seal(const uint8_t key[DG_GOSSIP_KEY_LEN], const void *plain, size_t len,
		   struct dg_buf *out)
{
	size_t start = out->len;
	int rv, n = 0, fin = 0;
	EVP_CIPHER_CTX *ctx = NULL;
	if (len > (size_t)DG_GOSSIP_STREAM_MAX)
		return DG_ETOOBIG;
	if ((rv = dg_buf_reserve(out, len + DG_GOSSIP_SEAL_OVERHEAD)) != 0)
		return rv;
	uint8_t *p = (uint8_t *)out->data + start;
	p[0] = DG_GOSSIP_SEALED;
	uint8_t *nonce = p + 1, *ct = nonce + DG_GOSSIP_NONCE_LEN;
	rv = DG_EIO;
	if (RAND_bytes(nonce, DG_GOSSIP_NONCE_LEN) != 1)
		goto out;
	if (!(ctx = EVP_CIPHER_CTX_new()))
		goto out;
	if (EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, DG_GOSSIP_NONCE_LEN, NULL) != 1 ||
	    EVP_EncryptInit_ex(ctx, NULL, NULL, key, nonce) != 1 ||
	    EVP_EncryptUpdate(ctx, NULL, &n, p, 1) != 1 || /* the version byte, authenticated */
	    (len && EVP_EncryptUpdate(ctx, ct, &n, plain, (int)len) != 1) ||
	    EVP_EncryptFinal_ex(ctx, ct + (len ? n : 0), &fin) != 1 ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, DG_GOSSIP_GCM_TAG_LEN, ct + len) != 1)
		goto out;
	out->len = start + len + DG_GOSSIP_SEAL_OVERHEAD;
	out->data[out->len] = 0;
	rv = 0;
out:
	EVP_CIPHER_CTX_free(ctx);
	if (rv != 0 && out->data)
		out->data[start] = 0;
	return rv;
}

int dg_gossip_open(const uint8_t key[DG_GOSSIP_KEY_LEN], const void *buf, size_t len,
		   uint8_t *out, size_t *outlen)
{
	const uint8_t *p = buf;
	int n = 0, fin = 0, rv = DG_EPERM;
	EVP_CIPHER_CTX *ctx = NULL;
	*outlen = 0;
	if (len < DG_GOSSIP_SEAL_OVERHEAD || len > (size_t)DG_GOSSIP_STREAM_MAX ||
	    p[0] != DG_GOSSIP_SEALED)
		return DG_EPERM;
	size_t clen = len - DG_GOSSIP_SEAL_OVERHEAD;
	const uint8_t *nonce = p + 1, *ct = nonce + DG_GOSSIP_NONCE_LEN;
	uint8_t tag[DG_GOSSIP_GCM_TAG_LEN];
	memcpy(tag, ct + clen, sizeof(tag)); /* EVP wants a writable tag */
	if (!(ctx = EVP_CIPHER_CTX_new()))
		return DG_EPERM;
	if (EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, DG_GOSSIP_NONCE_LEN, NULL) != 1 ||
	    EVP_DecryptInit_ex(ctx, NULL, NULL, key, nonce) != 1 ||
	    EVP_DecryptUpdate(ctx, NULL, &n, p, 1) != 1 ||
	    (clen && EVP_DecryptUpdate(ctx, out, &n, ct, (int)clen) != 1) ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, sizeof(tag), tag) != 1 ||
	    EVP_DecryptFinal_ex(ctx, out + (clen ? n : 0), &fin) != 1) {
		/* unauthenticated plaintext must not reach the caller */
		if (clen)
			memset(out, 0, clen);
		goto out;
	}
	*outlen = clen;
	rv = 0;
out:
	EVP_CIPHER_CTX_free(ctx);
	return rv;
}
