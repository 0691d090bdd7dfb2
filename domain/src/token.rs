//! Device tokens per platform, parsed once at the edge: APNs device tokens, FCM registration
//! tokens and Web Push subscriptions.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};

use crate::text::{UnstorableText, storable, storable_opt};

/// The push service a device is registered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    /// Apple Push Notification service: an iOS, iPadOS, macOS or watchOS app.
    Apns,
    /// Firebase Cloud Messaging (HTTP v1): an Android app, or any app that uses FCM.
    Fcm,
    /// A browser's push service, through a Web Push subscription.
    Webpush,
}

impl Platform {
    /// Every platform, in the order Clarion lists them.
    pub const ALL: [Platform; 3] = [Platform::Apns, Platform::Fcm, Platform::Webpush];

    /// The stored name: `apns`, `fcm` or `webpush`. Parsing also takes `ios`, `gcm`, `android`
    /// and `web`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Apns => "apns",
            Platform::Fcm => "fcm",
            Platform::Webpush => "webpush",
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Platform {
    type Err = TokenError;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw.to_ascii_lowercase().as_str() {
            "apns" | "ios" => Ok(Platform::Apns),
            "fcm" | "gcm" | "android" => Ok(Platform::Fcm),
            "webpush" | "web" => Ok(Platform::Webpush),
            _ => Err(TokenError::UnknownPlatform(raw.to_owned())),
        }
    }
}

/// Why a token or subscription was refused. Each message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// A platform name that is none of the known ones; it holds the text given.
    #[error("unknown platform {0:?}: expected apns, fcm or webpush")]
    UnknownPlatform(String),
    /// The APNs token is shorter than 64 or longer than 200 characters; it holds its length.
    #[error("APNs token must be 64 to 200 hexadecimal characters; got {0} characters")]
    ApnsLength(usize),
    /// The APNs token has an odd number of characters, so it is not whole bytes.
    #[error("APNs token must have an even number of characters; got {0}")]
    ApnsOddLength(usize),
    /// The APNs token holds a character that is not hexadecimal.
    #[error("APNs token must be hexadecimal; found {0:?}")]
    ApnsNotHex(char),
    /// The FCM token is empty or longer than 4096 characters; it holds its length.
    #[error("FCM token must be 1 to 4096 characters; got {0}")]
    FcmLength(usize),
    /// The FCM token holds white space or a character that is not printable ASCII.
    #[error("FCM token must be printable ASCII without white space; found {0:?}")]
    FcmCharacter(char),
    /// The Web Push endpoint does not parse as a URL; it holds why.
    #[error("Web Push endpoint is not a valid URL: {0}")]
    EndpointUrl(String),
    /// The Web Push endpoint's scheme is not `https`; it holds the scheme.
    #[error("Web Push endpoint must use https; got {0:?}")]
    EndpointScheme(String),
    /// The Web Push endpoint has no host.
    #[error("Web Push endpoint must have a host name")]
    EndpointHost,
    /// The Web Push endpoint holds a user name or password, which would leak to the push
    /// service.
    #[error("Web Push endpoint must not carry user name or password")]
    EndpointCredentials,
    /// The Web Push endpoint is longer than 2048 characters; it holds its length.
    #[error("Web Push endpoint is {0} characters long; at most 2048 are allowed")]
    EndpointLength(usize),
    /// The Web Push endpoint's host is an address (or a name such as `localhost`) that is not
    /// public, and the application does not allow private endpoints: a guard against
    /// server-side request forgery.
    #[error(
        "Web Push endpoint host {0} is not a public address (loopback, private, link-local or reserved); \
         set webpush.allow_private_endpoints for this application to allow it"
    )]
    EndpointNotPublic(String),
    /// `p256dh` is not base64url; it holds why.
    #[error("Web Push p256dh must be base64url: {0}")]
    P256dhEncoding(String),
    /// `p256dh` does not decode to 65 bytes; it holds how many it has.
    #[error("Web Push p256dh must be a 65-byte uncompressed P-256 point; got {0} bytes")]
    P256dhLength(usize),
    /// `p256dh` does not start with 0x04, the mark of an uncompressed point; it holds the first
    /// byte.
    #[error("Web Push p256dh must be an uncompressed point starting with 0x04; got 0x{0:02x}")]
    P256dhPrefix(u8),
    /// `auth` is not base64url; it holds why.
    #[error("Web Push auth must be base64url: {0}")]
    AuthEncoding(String),
    /// `auth` does not decode to 16 bytes; it holds how many it has.
    #[error("Web Push auth must be 16 bytes; got {0} bytes")]
    AuthLength(usize),
    /// A device of `expected` lacks a part its platform needs.
    #[error("a {expected} device needs {what}")]
    WrongShape {
        /// The platform the token was given for.
        expected: Platform,
        /// The part that is missing, in words.
        what: &'static str,
    },
    /// A part holds a character no store can keep; the error names it.
    #[error(transparent)]
    Unstorable(#[from] UnstorableText),
}

/// An APNs device token: hexadecimal, even length, 64 to 200 characters, stored lower-case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ApnsToken(String);

impl ApnsToken {
    /// Parses a token as an app reads it from APNs, in either case.
    ///
    /// # Errors
    /// [`TokenError::ApnsLength`], [`TokenError::ApnsOddLength`] or [`TokenError::ApnsNotHex`].
    pub fn parse(raw: &str) -> Result<Self, TokenError> {
        if let Some(bad) = raw.chars().find(|c| !c.is_ascii_hexdigit()) {
            return Err(TokenError::ApnsNotHex(bad));
        }
        let len = raw.len();
        if !(64..=200).contains(&len) {
            return Err(TokenError::ApnsLength(len));
        }
        if !len.is_multiple_of(2) {
            return Err(TokenError::ApnsOddLength(len));
        }
        Ok(Self(raw.to_ascii_lowercase()))
    }

    /// The token in lower case, as the store keeps it and APNs takes it.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ApnsToken {
    type Error = TokenError;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl From<ApnsToken> for String {
    fn from(value: ApnsToken) -> Self {
        value.0
    }
}

/// An FCM registration token: 1 to 4096 printable ASCII characters, no white space.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FcmToken(String);

impl FcmToken {
    /// Parses a registration token as an app reads it from the FCM SDK.
    ///
    /// # Errors
    /// [`TokenError::FcmLength`] or [`TokenError::FcmCharacter`].
    pub fn parse(raw: &str) -> Result<Self, TokenError> {
        if let Some(bad) = raw.chars().find(|c| !c.is_ascii_graphic()) {
            return Err(TokenError::FcmCharacter(bad));
        }
        let len = raw.len();
        if !(1..=4096).contains(&len) {
            return Err(TokenError::FcmLength(len));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The token as given.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for FcmToken {
    type Error = TokenError;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl From<FcmToken> for String {
    fn from(value: FcmToken) -> Self {
        value.0
    }
}

/// Whether Web Push endpoints on non-public addresses are accepted (tests and private
/// deployments only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EndpointPolicy {
    /// Only endpoints on public hosts: what every real deployment uses.
    #[default]
    PublicOnly,
    /// Endpoints on loopback, private and other non-public addresses too (tests, and push services
    /// inside a private network).
    AllowPrivate,
}

/// A Web Push subscription (RFC 8030 endpoint, RFC 8291 keys).
///
/// Read through serde, a subscription is checked as [`WebPushSubscription::parse`] checks it,
/// with private endpoints allowed: whether they are is the policy of the application that
/// registers it, which serde does not know.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawSubscription")]
pub struct WebPushSubscription {
    endpoint: String,
    p256dh: String,
    auth: String,
}

#[derive(Deserialize)]
struct RawSubscription {
    endpoint: String,
    p256dh: String,
    auth: String,
}

impl TryFrom<RawSubscription> for WebPushSubscription {
    type Error = TokenError;
    fn try_from(raw: RawSubscription) -> Result<Self, Self::Error> {
        Self::parse(
            &raw.endpoint,
            &raw.p256dh,
            &raw.auth,
            EndpointPolicy::AllowPrivate,
        )
    }
}

fn decode_base64url(raw: &str) -> Result<Vec<u8>, base64::DecodeError> {
    if raw.ends_with('=') {
        URL_SAFE.decode(raw)
    } else {
        URL_SAFE_NO_PAD.decode(raw)
    }
}

impl WebPushSubscription {
    /// Parses a subscription as a browser's `PushSubscription.toJSON()` gives it.
    ///
    /// # Errors
    /// A [`TokenError`] naming the endpoint, `p256dh` or `auth` field that is wrong.
    pub fn parse(
        endpoint: &str,
        p256dh: &str,
        auth: &str,
        policy: EndpointPolicy,
    ) -> Result<Self, TokenError> {
        if endpoint.len() > 2048 {
            return Err(TokenError::EndpointLength(endpoint.len()));
        }
        let url = url::Url::parse(endpoint).map_err(|e| TokenError::EndpointUrl(e.to_string()))?;
        if url.scheme() != "https" {
            return Err(TokenError::EndpointScheme(url.scheme().to_owned()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(TokenError::EndpointCredentials);
        }
        let host = url.host().ok_or(TokenError::EndpointHost)?;
        if policy == EndpointPolicy::PublicOnly {
            let literal = match host {
                url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
                url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
                url::Host::Domain(name) => {
                    let canonical = canonical_host(name);
                    if is_local_name(&canonical) {
                        return Err(TokenError::EndpointNotPublic(name.to_owned()));
                    }
                    canonical.parse::<IpAddr>().ok()
                }
            };
            if let Some(ip) = literal
                && !is_public_ip(ip)
            {
                return Err(TokenError::EndpointNotPublic(ip.to_string()));
            }
        }

        let key = decode_base64url(p256dh.trim())
            .map_err(|e| TokenError::P256dhEncoding(e.to_string()))?;
        if key.len() != 65 {
            return Err(TokenError::P256dhLength(key.len()));
        }
        if key[0] != 0x04 {
            return Err(TokenError::P256dhPrefix(key[0]));
        }
        let secret =
            decode_base64url(auth.trim()).map_err(|e| TokenError::AuthEncoding(e.to_string()))?;
        if secret.len() != 16 {
            return Err(TokenError::AuthLength(secret.len()));
        }
        Ok(Self {
            endpoint: url.to_string(),
            p256dh: URL_SAFE_NO_PAD.encode(&key),
            auth: URL_SAFE_NO_PAD.encode(&secret),
        })
    }

    /// The push endpoint URL.
    #[must_use]
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The client's public key, base64url without padding.
    #[must_use]
    pub fn p256dh(&self) -> &str {
        &self.p256dh
    }

    /// The client's authentication secret, base64url without padding.
    #[must_use]
    pub fn auth(&self) -> &str {
        &self.auth
    }
}

/// A host name as DNS compares it: in lower case and without the trailing dots that make it
/// fully qualified (`LOCALHOST.` is `localhost`).
fn canonical_host(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether a canonical host name always means this machine: `localhost` and its subdomains
/// (RFC 6761), and the loopback names of common hosts files. Other names are checked when the
/// push is sent, by the resolver that refuses non-public addresses.
fn is_local_name(name: &str) -> bool {
    const LOOPBACK_NAMES: [&str; 4] = [
        "localhost",
        "ip6-localhost",
        "ip6-loopback",
        "localhost.localdomain",
    ];
    LOOPBACK_NAMES.contains(&name) || name.ends_with(".localhost")
}

/// Whether an address is globally routable. Loopback, private, shared (CGNAT), link-local,
/// documentation, benchmarking, multicast, broadcast and reserved ranges are not. IPv4 addresses
/// embedded in IPv6 (mapped, compatible, NAT64) are judged as IPv4.
#[must_use]
pub fn is_public_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let not_public = a == 0                               // "this network"
        || a == 10                                        // private
        || a == 127                                       // loopback
        || (a == 100 && (64..128).contains(&b))           // shared address space (CGNAT)
        || (a == 169 && b == 254)                         // link-local
        || (a == 172 && (16..32).contains(&b))            // private
        || (a == 192 && b == 0 && c == 0)                 // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2)                 // TEST-NET-1
        || (a == 192 && b == 88 && c == 99)               // 6to4 relay anycast
        || (a == 192 && b == 168)                         // private
        || (a == 198 && (b == 18 || b == 19))             // benchmarking
        || (a == 198 && b == 51 && c == 100)              // TEST-NET-2
        || (a == 203 && b == 0 && c == 113)               // TEST-NET-3
        || a >= 224; // multicast, reserved, broadcast
    !not_public
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let seg = ip.segments();
    // NAT64 well-known prefix 64:ff9b::/96 carries an IPv4 address.
    if seg[0] == 0x64 && seg[1] == 0xff9b && seg[2..6].iter().all(|s| *s == 0) {
        let [.., a, b, c, d] = ip.octets();
        return is_public_v4(Ipv4Addr::new(a, b, c, d));
    }
    let not_public = ip.is_unspecified()
        || ip.is_loopback()
        || seg[0..6].iter().all(|s| *s == 0)              // IPv4-compatible (deprecated)
        || (seg[0] & 0xfe00) == 0xfc00                    // unique local
        || (seg[0] & 0xffc0) == 0xfe80                    // link-local
        || (seg[0] & 0xffc0) == 0xfec0                    // site-local (deprecated)
        || (seg[0] & 0xff00) == 0xff00                    // multicast
        || (seg[0] == 0x2001 && seg[1] == 0x0db8)         // documentation
        || (seg[0] == 0x0100 && seg[1..4].iter().all(|s| *s == 0)) // discard-only
        || (seg[0] == 0x2001 && seg[1] < 0x0200)          // IETF protocol assignments, Teredo
        || seg[0] == 0x2002; // 6to4 relays reach arbitrary IPv4 hosts
    !not_public
}

/// A device's token on its platform.
///
/// Read through serde, each variant's token is checked by its parser, a subscription with
/// private endpoints allowed (see [`WebPushSubscription`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "platform", rename_all = "lowercase")]
pub enum DeviceToken {
    /// A device of an Apple app, by its APNs device token.
    Apns {
        /// The APNs device token.
        token: ApnsToken,
    },
    /// A device of an app that uses FCM, by its registration token.
    Fcm {
        /// The FCM registration token.
        token: FcmToken,
    },
    /// A browser, by its Web Push subscription.
    Webpush {
        /// The browser's subscription: endpoint and keys.
        subscription: WebPushSubscription,
    },
}

impl DeviceToken {
    /// The platform the token is for.
    #[must_use]
    pub fn platform(&self) -> Platform {
        match self {
            DeviceToken::Apns { .. } => Platform::Apns,
            DeviceToken::Fcm { .. } => Platform::Fcm,
            DeviceToken::Webpush { .. } => Platform::Webpush,
        }
    }

    /// The string that identifies the device on its platform and is unique per application:
    /// the APNs or FCM token, or the Web Push endpoint.
    #[must_use]
    pub fn key(&self) -> &str {
        match self {
            DeviceToken::Apns { token } => token.as_str(),
            DeviceToken::Fcm { token } => token.as_str(),
            DeviceToken::Webpush { subscription } => subscription.endpoint(),
        }
    }

    /// Parses a token from its raw parts: `token` for APNs and FCM, the endpoint in `token`
    /// plus `p256dh` and `auth` for Web Push.
    ///
    /// # Errors
    /// [`TokenError::Unstorable`] naming `token`, `p256dh` or `auth` when one holds a NUL
    /// character (a URL parser would percent-encode it in an endpoint's path: refused all the
    /// same, as in every other field), the [`TokenError`] of the platform's parser, or
    /// [`TokenError::WrongShape`] when a Web Push subscription lacks its keys.
    pub fn parse(
        platform: Platform,
        token: &str,
        p256dh: Option<&str>,
        auth: Option<&str>,
        policy: EndpointPolicy,
    ) -> Result<Self, TokenError> {
        storable("token", token)?;
        storable_opt("p256dh", p256dh)?;
        storable_opt("auth", auth)?;
        match platform {
            Platform::Apns => Ok(DeviceToken::Apns {
                token: ApnsToken::parse(token)?,
            }),
            Platform::Fcm => Ok(DeviceToken::Fcm {
                token: FcmToken::parse(token)?,
            }),
            Platform::Webpush => {
                let (Some(p256dh), Some(auth)) = (p256dh, auth) else {
                    return Err(TokenError::WrongShape {
                        expected: Platform::Webpush,
                        what: "both p256dh and auth keys",
                    });
                };
                Ok(DeviceToken::Webpush {
                    subscription: WebPushSubscription::parse(token, p256dh, auth, policy)?,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const P256DH: &str =
        "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
    const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";

    fn webpush(endpoint: &str, policy: EndpointPolicy) -> Result<WebPushSubscription, TokenError> {
        WebPushSubscription::parse(endpoint, P256DH, AUTH, policy)
    }

    #[test]
    fn a_subscription_read_through_serde_is_checked_as_a_parsed_one() {
        // Found by the `tokens` fuzz target (docs/fuzzing.md): serde built any subscription.
        let json = |endpoint: &str, p256dh: &str| {
            format!(
                r#"{{"platform":"webpush","subscription":{{"endpoint":"{endpoint}","p256dh":"{p256dh}","auth":"{AUTH}"}}}}"#
            )
        };
        for (endpoint, p256dh) in [
            (
                "https://push.example.com/1",
                "BCVxsr7N_eNgVRqvHtD0zTZsEc6-not-a-key",
            ),
            ("http://push.example.com/1", P256DH),
            ("not a url", P256DH),
        ] {
            let read = serde_json::from_str::<DeviceToken>(&json(endpoint, p256dh));
            assert!(read.is_err(), "{endpoint} {p256dh} was read as {read:?}");
        }
        let read = serde_json::from_str::<DeviceToken>(&json("https://10.0.0.1/1", P256DH));
        assert_eq!(
            read.ok(),
            Some(DeviceToken::Webpush {
                subscription: webpush("https://10.0.0.1/1", EndpointPolicy::AllowPrivate)
                    .expect("valid")
            })
        );
    }

    #[test]
    fn apns_tokens_are_stored_lower_case() {
        let raw = "AB".repeat(32);
        assert_eq!(
            ApnsToken::parse(&raw).map(|t| t.as_str().to_owned()),
            Ok("ab".repeat(32))
        );
    }

    #[test]
    fn apns_tokens_outside_the_length_range_are_refused() {
        assert_eq!(
            ApnsToken::parse(&"a".repeat(62)),
            Err(TokenError::ApnsLength(62))
        );
        assert_eq!(
            ApnsToken::parse(&"a".repeat(202)),
            Err(TokenError::ApnsLength(202))
        );
        assert_eq!(
            ApnsToken::parse(&"a".repeat(65)),
            Err(TokenError::ApnsOddLength(65))
        );
    }

    #[test]
    fn fcm_tokens_may_not_hold_white_space() {
        assert_eq!(
            FcmToken::parse("abc def"),
            Err(TokenError::FcmCharacter(' '))
        );
        assert_eq!(FcmToken::parse(""), Err(TokenError::FcmLength(0)));
        assert!(FcmToken::parse("fcm:APA91b-x_y").is_ok());
    }

    #[test]
    fn a_real_browser_subscription_is_accepted() {
        let sub = webpush(
            "https://fcm.googleapis.com/fcm/send/abc:def",
            EndpointPolicy::PublicOnly,
        )
        .expect("valid subscription");
        assert_eq!(
            sub.endpoint(),
            "https://fcm.googleapis.com/fcm/send/abc:def"
        );
        assert_eq!(sub.auth(), AUTH);
    }

    #[test]
    fn web_push_endpoints_must_be_https() {
        assert_eq!(
            webpush("http://push.example.com/x", EndpointPolicy::PublicOnly),
            Err(TokenError::EndpointScheme("http".into()))
        );
    }

    #[test]
    fn private_web_push_endpoints_are_refused_unless_allowed() {
        for endpoint in [
            "https://127.0.0.1/push",
            "https://10.1.2.3/push",
            "https://192.168.0.1:8443/push",
            "https://169.254.169.254/latest",
            "https://[::1]/push",
            "https://[fe80::1]/push",
            "https://[::ffff:10.0.0.1]/push",
            "https://localhost/push",
            "https://0.0.0.0/push",
        ] {
            assert!(
                matches!(
                    webpush(endpoint, EndpointPolicy::PublicOnly),
                    Err(TokenError::EndpointNotPublic(_))
                ),
                "{endpoint} should be refused"
            );
            assert!(
                webpush(endpoint, EndpointPolicy::AllowPrivate).is_ok(),
                "{endpoint} should be allowed"
            );
        }
        assert!(webpush("https://8.8.8.8/push", EndpointPolicy::PublicOnly).is_ok());
    }

    #[test]
    fn every_spelling_of_a_loopback_host_is_refused() {
        for host in [
            "LOCALHOST.:443",
            "localhost.",
            "Localhost",
            "localhost..",
            "LocalHost.:8443",
            "127.0.0.1.",
            "127.1",
            "0x7f.1",
            "0x7F000001",
            "2130706433",
            "017700000001",
            "[::1]",
            "[0:0:0:0:0:0:0:1]",
            "[::ffff:127.0.0.1]",
            "[::FFFF:7f00:1]",
            "ip6-localhost",
            "IP6-LOOPBACK.",
            "localhost.localdomain",
            "push.localhost",
            "PUSH.LOCALHOST.",
            "0",
            "0.0.0.0.",
        ] {
            let endpoint = format!("https://{host}/push");
            assert!(
                matches!(
                    webpush(&endpoint, EndpointPolicy::PublicOnly),
                    Err(TokenError::EndpointNotPublic(_))
                ),
                "{endpoint} should be refused, got {:?}",
                webpush(&endpoint, EndpointPolicy::PublicOnly)
            );
        }
        for endpoint in [
            "https://push.example.com./x",
            "https://LOCALHOST.example.com/x",
            "https://notlocalhost/x",
        ] {
            assert!(
                webpush(endpoint, EndpointPolicy::PublicOnly).is_ok(),
                "{endpoint} should be accepted"
            );
        }
    }

    #[test]
    fn web_push_keys_are_checked_for_length_and_shape() {
        let endpoint = "https://push.example.com/x";
        let short = URL_SAFE_NO_PAD.encode([4u8; 64]);
        assert_eq!(
            WebPushSubscription::parse(endpoint, &short, AUTH, EndpointPolicy::PublicOnly),
            Err(TokenError::P256dhLength(64))
        );
        let compressed = URL_SAFE_NO_PAD.encode([2u8; 65]);
        assert_eq!(
            WebPushSubscription::parse(endpoint, &compressed, AUTH, EndpointPolicy::PublicOnly),
            Err(TokenError::P256dhPrefix(2))
        );
        let auth = URL_SAFE_NO_PAD.encode([1u8; 15]);
        assert_eq!(
            WebPushSubscription::parse(endpoint, P256DH, &auth, EndpointPolicy::PublicOnly),
            Err(TokenError::AuthLength(15))
        );
        assert!(matches!(
            WebPushSubscription::parse(endpoint, "not base64!", AUTH, EndpointPolicy::PublicOnly),
            Err(TokenError::P256dhEncoding(_))
        ));
    }

    proptest! {
        #[test]
        fn any_even_length_hex_string_in_range_is_an_apns_token(bytes in proptest::collection::vec(any::<u8>(), 32..=100)) {
            let raw: String = bytes.iter().map(|b| format!("{b:02X}")).collect();
            let token = ApnsToken::parse(&raw).expect("valid token");
            prop_assert_eq!(token.as_str(), raw.to_ascii_lowercase());
        }

        #[test]
        fn apns_parser_never_accepts_non_hex_or_bad_lengths(raw in "\\PC{0,220}") {
            let ok = raw.len() >= 64 && raw.len() <= 200 && raw.len() % 2 == 0
                && raw.chars().all(|c| c.is_ascii_hexdigit());
            prop_assert_eq!(ApnsToken::parse(&raw).is_ok(), ok);
        }

        #[test]
        fn fcm_parser_accepts_exactly_printable_ascii_without_spaces(raw in "\\PC{0,64}") {
            let ok = !raw.is_empty() && raw.chars().all(|c| c.is_ascii_graphic());
            prop_assert_eq!(FcmToken::parse(&raw).is_ok(), ok);
        }

        #[test]
        fn fcm_tokens_longer_than_4096_are_refused(len in 4097usize..6000) {
            prop_assert_eq!(FcmToken::parse(&"a".repeat(len)), Err(TokenError::FcmLength(len)));
        }

        #[test]
        fn web_push_keys_round_trip_through_base64url(key in proptest::collection::vec(any::<u8>(), 64), auth in proptest::collection::vec(any::<u8>(), 16)) {
            let mut point = vec![4u8];
            point.extend_from_slice(&key);
            let sub = WebPushSubscription::parse(
                "https://push.example.com/s/1",
                &URL_SAFE.encode(&point),
                &URL_SAFE_NO_PAD.encode(&auth),
                EndpointPolicy::PublicOnly,
            ).expect("valid keys");
            prop_assert_eq!(decode_base64url(sub.p256dh()).ok(), Some(point));
            prop_assert_eq!(decode_base64url(sub.auth()).ok(), Some(auth));
        }

        #[test]
        fn private_ipv4_literals_are_never_public(b in any::<u8>(), c in any::<u8>(), d in any::<u8>()) {
            prop_assert!(!is_public_ip(IpAddr::V4(Ipv4Addr::new(10, b, c, d))));
            prop_assert!(!is_public_ip(IpAddr::V4(Ipv4Addr::new(127, b, c, d))));
            prop_assert!(!is_public_ip(IpAddr::V4(Ipv4Addr::new(192, 168, c, d))));
            prop_assert!(!is_public_ip(IpAddr::V6(Ipv4Addr::new(10, b, c, d).to_ipv6_mapped())));
        }
    }
}
