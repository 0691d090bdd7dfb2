//! Web Push message encryption (RFC 8291) in the `aes128gcm` content coding (RFC 8188), on
//! aws-lc-rs: one ephemeral P-256 key agreement, HKDF-SHA256 and AES-128-GCM per message.
//!
//! Written here rather than taken from web-push-native because that crate computes on the
//! pure-Rust `p256`, several times slower per message (docs/adr/0005).

use aws_lc_rs::{aead, agreement, hkdf, rand};

/// The record size written in the header. A push service must accept 4096-byte bodies
/// (RFC 8291 §4), and with one record the size only bounds the plaintext.
const RECORD_SIZE: u32 = 4096;
const SALT_LEN: usize = 16;
/// An uncompressed P-256 point: 0x04, then x and y.
const PUBLIC_KEY_LEN: usize = 65;
const TAG_LEN: usize = 16;
/// Salt, record size, key id length and the key id: the application server's public key.
const HEADER_LEN: usize = SALT_LEN + 4 + 1 + PUBLIC_KEY_LEN;
/// The delimiter that ends the last (here the only) record's plaintext (RFC 8188 §2).
const LAST_RECORD: u8 = 0x02;

/// The longest plaintext that fits one record: the record holds the plaintext, its
/// delimiter and the tag.
pub const MAX_PLAINTEXT: usize = RECORD_SIZE as usize - TAG_LEN - 1;

/// Why a message could not be encrypted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncryptError {
    /// The user agent's key is not an uncompressed point on P-256.
    #[error("the user agent's public key is not an uncompressed P-256 point")]
    PublicKey,
    /// The plaintext does not fit one record.
    #[error("the plaintext is {0} bytes, over the {MAX_PLAINTEXT} bytes one record holds")]
    TooLong(usize),
    /// The cryptographic library failed at the named step (no input causes this).
    #[error("the cryptographic library failed while {0}")]
    Crypto(&'static str),
}

/// Encrypts `plaintext` for the user agent whose public key (`p256dh`, 65 bytes uncompressed)
/// and authentication secret are given, with a fresh key pair and salt: the body of a push
/// request with `Content-Encoding: aes128gcm`.
///
/// # Errors
/// [`EncryptError::PublicKey`] when `ua_public` is not an uncompressed P-256 point,
/// [`EncryptError::TooLong`] when the plaintext is longer than [`MAX_PLAINTEXT`], and
/// [`EncryptError::Crypto`] when the library cannot make a key or random salt.
pub fn encrypt(
    plaintext: &[u8],
    ua_public: &[u8],
    auth: &[u8; 16],
) -> Result<Vec<u8>, EncryptError> {
    let as_private = agreement::PrivateKey::generate(&agreement::ECDH_P256)
        .map_err(|_| EncryptError::Crypto("generating the ephemeral key"))?;
    let mut salt = [0u8; SALT_LEN];
    rand::fill(&mut salt).map_err(|_| EncryptError::Crypto("drawing the salt"))?;
    encrypt_with(plaintext, ua_public, auth, &as_private, &salt)
}

/// [`encrypt`] with the application server's key and the salt given, so that a test can
/// reproduce a known message.
fn encrypt_with(
    plaintext: &[u8],
    ua_public: &[u8],
    auth: &[u8; 16],
    as_private: &agreement::PrivateKey,
    salt: &[u8; SALT_LEN],
) -> Result<Vec<u8>, EncryptError> {
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(EncryptError::TooLong(plaintext.len()));
    }
    // `agree` also takes compressed points, but the key info below needs the uncompressed
    // form, which is also the only one RFC 8291 §3.2 allows.
    if ua_public.len() != PUBLIC_KEY_LEN || ua_public.first() != Some(&0x04) {
        return Err(EncryptError::PublicKey);
    }
    let as_public = as_private
        .compute_public_key()
        .map_err(|_| EncryptError::Crypto("computing the public key"))?;
    let as_public = as_public.as_ref();
    if as_public.len() != PUBLIC_KEY_LEN {
        return Err(EncryptError::Crypto("encoding the public key"));
    }

    // RFC 8291 §3.3 and §3.4: the shared secret, salted with the authentication secret, is
    // expanded with both public keys into the input keying material.
    let ikm = agreement::agree(
        as_private,
        agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, ua_public),
        EncryptError::PublicKey,
        |shared| {
            let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, auth).extract(shared);
            let info = [b"WebPush: info\0".as_slice(), ua_public, as_public];
            let mut ikm = [0u8; 32];
            prk.expand(&info, Len(ikm.len()))
                .and_then(|okm| okm.fill(&mut ikm))
                .map_err(|_| EncryptError::Crypto("deriving the input keying material"))?;
            Ok(ikm)
        },
    )?;

    // RFC 8188 §2.2 and §2.3: the content-encryption key and nonce.
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(&ikm);
    let key: aead::UnboundKey = prk
        .expand(&[b"Content-Encoding: aes128gcm\0"], &aead::AES_128_GCM)
        .map_err(|_| EncryptError::Crypto("deriving the content-encryption key"))?
        .into();
    let mut nonce = [0u8; aead::NONCE_LEN];
    prk.expand(&[b"Content-Encoding: nonce\0"], Len(nonce.len()))
        .and_then(|okm| okm.fill(&mut nonce))
        .map_err(|_| EncryptError::Crypto("deriving the nonce"))?;

    // One record, sequence number 0: the nonce is used as derived.
    let mut body = Vec::with_capacity(HEADER_LEN + plaintext.len() + 1 + TAG_LEN);
    body.extend_from_slice(salt);
    body.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    body.push(PUBLIC_KEY_LEN as u8);
    body.extend_from_slice(as_public);
    body.extend_from_slice(plaintext);
    body.push(LAST_RECORD);
    let tag = aead::LessSafeKey::new(key)
        .seal_in_place_separate_tag(
            aead::Nonce::assume_unique_for_key(nonce),
            aead::Aad::empty(),
            // In range: the header was written just above.
            &mut body[HEADER_LEN..],
        )
        .map_err(|_| EncryptError::Crypto("sealing the record"))?;
    body.extend_from_slice(tag.as_ref());
    Ok(body)
}

/// An HKDF output length.
struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use p256::SecretKey;
    use p256::elliptic_curve::sec1::ToEncodedPoint as _;
    use proptest::prelude::*;

    use super::*;

    fn b64(text: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(text).unwrap()
    }

    // RFC 8291 §5 and Appendix A.
    const PLAINTEXT: &[u8] = b"When I grow up, I want to be a watermelon";
    const AS_PRIVATE: &str = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw";
    const UA_PUBLIC: &str =
        "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
    const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";
    const SALT: &str = "DGv6ra1nlYgDCS1FRnbzlw";
    const BODY: &str = concat!(
        "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27ml",
        "mlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPT",
        "pK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN"
    );

    /// A user agent: its private key, public key (p256dh) and authentication secret.
    struct UserAgent {
        secret: SecretKey,
        public: Vec<u8>,
        auth: [u8; 16],
    }

    fn user_agent() -> UserAgent {
        let mut scalar = [0u8; 32];
        let mut auth = [0u8; 16];
        getrandom::fill(&mut scalar).unwrap();
        getrandom::fill(&mut auth).unwrap();
        let secret = SecretKey::from_slice(&scalar).unwrap();
        let public = secret
            .public_key()
            .to_encoded_point(false)
            .as_bytes()
            .to_vec();
        UserAgent {
            secret,
            public,
            auth,
        }
    }

    #[test]
    fn the_rfc_8291_example_encrypts_to_the_rfc_body() {
        let as_private =
            agreement::PrivateKey::from_private_key(&agreement::ECDH_P256, &b64(AS_PRIVATE))
                .unwrap();
        let auth: [u8; 16] = b64(AUTH).try_into().unwrap();
        let salt: [u8; 16] = b64(SALT).try_into().unwrap();

        let body = encrypt_with(PLAINTEXT, &b64(UA_PUBLIC), &auth, &as_private, &salt).unwrap();

        assert_eq!(URL_SAFE_NO_PAD.encode(&body), BODY);
    }

    #[test]
    fn web_push_native_decrypts_a_message_to_its_plaintext() {
        let ua = user_agent();
        let plaintext = br#"{"title":"Order shipped","body":"On its way"}"#;

        let body = encrypt(plaintext, &ua.public, &ua.auth).unwrap();

        let auth = web_push_native::Auth::from(ua.auth);
        let decrypted = web_push_native::decrypt(body, &ua.secret, &auth).unwrap();
        assert_eq!(decrypted, plaintext);
    }

    #[test]
    fn each_message_has_its_own_salt_and_key() {
        let ua = user_agent();

        let first = encrypt(b"same", &ua.public, &ua.auth).unwrap();
        let second = encrypt(b"same", &ua.public, &ua.auth).unwrap();

        assert_ne!(first[..SALT_LEN], second[..SALT_LEN]);
        assert_ne!(first[21..HEADER_LEN], second[21..HEADER_LEN]);
        assert_ne!(first[HEADER_LEN..], second[HEADER_LEN..]);
    }

    #[test]
    fn a_plaintext_longer_than_one_record_is_refused() {
        let ua = user_agent();

        let error = encrypt(&[b'x'; MAX_PLAINTEXT + 1], &ua.public, &ua.auth).unwrap_err();

        assert_eq!(error, EncryptError::TooLong(MAX_PLAINTEXT + 1));
    }

    #[test]
    fn a_key_that_is_not_an_uncompressed_p256_point_is_refused() {
        let ua = user_agent();
        let mut off_curve = ua.public.clone();
        off_curve[64] ^= 1;
        let mut compressed = vec![0x02 | (ua.public[64] & 1)];
        compressed.extend_from_slice(&ua.public[1..33]);
        let mut not_a_point = vec![0x04];
        not_a_point.extend_from_slice(&[0; 64]);

        for key in [off_curve, compressed, not_a_point, Vec::new()] {
            let outcome = encrypt(b"hello", &key, &ua.auth);
            assert_eq!(outcome, Err(EncryptError::PublicKey), "{key:?}");
        }
    }

    proptest! {
        // Each case is two key agreements in an unoptimized build.
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn the_testkit_decrypts_any_plaintext_that_fits_one_record(
            plaintext in prop_oneof![
                prop::collection::vec(any::<u8>(), 0..64),
                prop::collection::vec(any::<u8>(), MAX_PLAINTEXT - 8..=MAX_PLAINTEXT),
                prop::collection::vec(any::<u8>(), 0..=MAX_PLAINTEXT),
            ]
        ) {
            let ua = user_agent();

            let body = encrypt(&plaintext, &ua.public, &ua.auth).unwrap();

            prop_assert_eq!(body.len(), HEADER_LEN + plaintext.len() + 1 + TAG_LEN);
            prop_assert_eq!(&body[SALT_LEN..SALT_LEN + 4], &RECORD_SIZE.to_be_bytes());
            let decrypted = clarion_testkit::webpush::decrypt_aes128gcm(
                &body,
                &ua.secret,
                &ua.public,
                &ua.auth,
            )
            .unwrap();
            prop_assert_eq!(decrypted, plaintext);
        }
    }
}
