"""Certificates for secured OPC UA connections.

* The agent's application instance certificate and key: the configured pair, or one generated
  into ``<state_dir>/opcua/`` on first start (kept, so the server's trust in it lasts).
* The server's certificate is trusted only when it equals the pinned ``server_certificate``,
  or is in ``trust_dir`` (or issued by a CA certificate there). An unknown one is saved to
  ``<state_dir>/opcua/untrusted/`` and the connection refused with a message naming the file to
  copy — trust is an operator's decision, never automatic.
* A trusted certificate must also pass the checks of OPC UA Part 4, 6.1.3 that do not depend on
  how it is trusted: its validity period (and its issuing CA's). One trusted through a CA must
  moreover be the one issued for this server: the endpoint's host among its subjectAltName DNS
  names or IP addresses, and the server's application URI as its subjectAltName URI. A pinned or
  individually trusted certificate is that server's by the operator's decision, so its names are
  not second-guessed (self-signed PLC certificates often name a host the agent does not use).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import ipaddress
import logging
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from asyncua import Client, ua
from asyncua.crypto import security_policies, uacrypto
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from drivers.opcua.config import SecurityConfig

log = logging.getLogger(__name__)

POLICIES: dict[str, type[security_policies.SecurityPolicy]] = {
    "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
}
MODES: dict[str, ua.MessageSecurityMode] = {
    "None": ua.MessageSecurityMode.None_,
    "Sign": ua.MessageSecurityMode.Sign,
    "SignAndEncrypt": ua.MessageSecurityMode.SignAndEncrypt,
}
_generate_lock = asyncio.Lock()


class SecuritySetupError(Exception):
    """Security cannot be set up (untrusted server, no matching endpoint, unreadable files)."""


def opcua_dir(state_dir: Path) -> Path:
    return Path(state_dir) / "opcua"


def default_trust_dir(state_dir: Path) -> Path:
    return opcua_dir(state_dir) / "trusted"


def application_uri(agent_id: str) -> str:
    return f"urn:mos-agent:{re.sub(r'[^A-Za-z0-9._-]', '-', agent_id)}"


def thumbprint(der: bytes) -> str:
    """SHA-1 thumbprint as OPC UA tools show it."""
    return hashlib.sha1(der).hexdigest().upper()


def _first_certificate(der: bytes) -> bytes:
    # servers may send their certificate followed by its chain; the first one is theirs
    cert = uacrypto.x509_from_der(der)
    return cert.public_bytes(Encoding.DER) if cert is not None else der


def load_certificate_der(path: Path) -> bytes:
    data = Path(path).read_bytes()
    if b"-----BEGIN CERTIFICATE-----" in data:
        return x509.load_pem_x509_certificate(data).public_bytes(Encoding.DER)
    return x509.load_der_x509_certificate(data).public_bytes(Encoding.DER)


def common_name(der: bytes) -> str:
    try:
        names = x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except ValueError:
        return ""
    return str(names[0].value) if names else ""


def certificate_uri(der: bytes) -> str | None:
    """The application URI in a certificate's subjectAltName (servers check it against ours)."""
    try:
        san = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except (x509.ExtensionNotFound, ValueError):
        return None
    uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None


@dataclass(frozen=True, slots=True)
class ClientCertificate:
    certificate: Path
    private_key: Path
    application_uri: str


async def client_certificate(security: SecurityConfig, state_dir: Path, agent_id: str) -> ClientCertificate:
    """The configured certificate and key, or the generated pair in ``<state_dir>/opcua/``."""
    if security.certificate is not None and security.private_key is not None:
        try:
            der = load_certificate_der(security.certificate)
        except (OSError, ValueError) as exc:
            raise SecuritySetupError(f"cannot read security.certificate {security.certificate}: {exc}") from exc
        uri = certificate_uri(der) or application_uri(agent_id)
        return ClientCertificate(security.certificate, security.private_key, uri)
    folder = opcua_dir(state_dir)
    cert_path, key_path = folder / "client_cert.der", folder / "client_key.pem"
    uri = application_uri(agent_id)
    async with _generate_lock:  # devices connecting at once must not generate two pairs
        fresh = not (cert_path.is_file() and key_path.is_file())
        folder.mkdir(parents=True, exist_ok=True)
        client = Client("opc.tcp://localhost:4840")
        client.application_uri = uri
        await client.setup_self_signed_certificate(
            key_path, cert_path, subject_attrs={"organizationName": "mos-agent"},
            extended=[ExtendedKeyUsageOID.CLIENT_AUTH], host_name=socket.gethostname())
        os.chmod(key_path, 0o600)
        if fresh:
            log.info("generated the agent's OPC UA certificate %s (servers must trust it)", cert_path)
    return ClientCertificate(cert_path, key_path, uri)


@dataclass(frozen=True, slots=True)
class ServerIdentity:
    """What the server's endpoint description says it is: its certificate and application URI."""

    certificate: bytes
    application_uri: str


async def server_certificate_of(endpoint: str, policy: str, mode: str, timeout: float) -> ServerIdentity:
    """The certificate the server presents on the endpoint with this policy and mode, with its
    application URI, fetched over an unsecured discovery channel (GetEndpoints is always allowed
    there)."""
    probe = Client(endpoint, timeout=timeout)
    async with asyncio.timeout(timeout * 2):
        endpoints = await probe.connect_and_get_server_endpoints()
    wanted_uri = POLICIES[policy].URI
    for ep in endpoints:
        if ep.SecurityPolicyUri == wanted_uri and ep.SecurityMode == MODES[mode]:
            if not ep.ServerCertificate:
                raise SecuritySetupError(f"the server's {policy}/{mode} endpoint has no certificate")
            return ServerIdentity(_first_certificate(ep.ServerCertificate), ep.Server.ApplicationUri or "")
    offered = sorted({f"{ep.SecurityPolicyUri.rpartition('#')[2]}/{ep.SecurityMode.name.rstrip('_')}"
                      for ep in endpoints})
    raise SecuritySetupError(f"the server offers no {policy}/{mode} endpoint (it offers: {', '.join(offered)})")


def _trust_files(trust_dir: Path) -> list[Path]:
    if not trust_dir.is_dir():
        return []
    return sorted(p for p in trust_dir.iterdir() if p.suffix.lower() in (".der", ".pem", ".crt", ".cer"))


def _issuer_of(cert: x509.Certificate, cas: list[x509.Certificate]) -> x509.Certificate | None:
    for ca in cas:
        if ca.subject != cert.issuer:
            continue
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return ca
    return None


def _trusted_certificates(security: SecurityConfig, state_dir: Path) -> list[bytes]:
    if security.server_certificate is not None:
        return [load_certificate_der(security.server_certificate)]
    found = []
    for path in _trust_files(security.trust_dir or default_trust_dir(state_dir)):
        try:
            found.append(load_certificate_der(path))
        except (OSError, ValueError):
            log.warning("ignoring %s in the OPC UA trust folder: not a certificate", path)
    return found


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _when(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _validity_problem(cert: x509.Certificate, what: str, now: dt.datetime) -> str | None:
    if now > cert.not_valid_after_utc:
        return f"validity period: {what} expired on {_when(cert.not_valid_after_utc)}"
    if now < cert.not_valid_before_utc:
        return f"validity period: {what} is not valid before {_when(cert.not_valid_before_utc)}"
    return None


def _subject_alt_names(cert: x509.Certificate) -> x509.SubjectAlternativeName | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None


def _host_matches(san: x509.SubjectAlternativeName, host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None and address in san.get_values_for_type(x509.IPAddress):
        return True
    # certificates often carry an address as a DNS name too; DNS names compare case-insensitively
    return host.lower().rstrip(".") in {name.lower().rstrip(".") for name in san.get_values_for_type(x509.DNSName)}


def _identity_problem(cert: x509.Certificate, server: ServerIdentity, endpoint: str) -> str | None:
    """Part 4, 6.1.3 host name and URI checks: is this certificate issued for this server?"""
    san = _subject_alt_names(cert)
    host = urlsplit(endpoint).hostname or ""
    if san is None:
        return f"host name: the certificate has no subjectAltName, so it names no host (the endpoint is {host})"
    if not _host_matches(san, host):
        named = [str(n) for n in san.get_values_for_type(x509.DNSName)]
        named += [str(a) for a in san.get_values_for_type(x509.IPAddress)]
        return (f"host name: the certificate is issued for {', '.join(named) or 'no host'}, "
                f"not for the endpoint's host {host}")
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if server.application_uri not in uris:
        return (f"application URI: the certificate is issued for {', '.join(uris) or 'no application URI'}, "
                f"not for the server's {server.application_uri or '(none given)'}")
    return None


def check_server_certificate(server: ServerIdentity, endpoint: str, security: SecurityConfig, state_dir: Path,
                             now: dt.datetime | None = None) -> None:
    """Raises :class:`SecuritySetupError` unless the server's certificate is trusted (pinned, in
    the trust folder, or issued by a CA there) and passes the checks its kind of trust needs; the
    message names the check that failed."""
    now = now or dt.datetime.now(dt.UTC)
    der = server.certificate
    cert = x509.load_der_x509_certificate(der)
    trusted = _trusted_certificates(security, state_dir)
    rejected = f"server certificate rejected (SHA-1 {thumbprint(der)})"
    if der in trusted:
        problem = _validity_problem(cert, "it", now)
        if problem:
            raise SecuritySetupError(f"{rejected}: {problem}; the server needs a renewed certificate")
        return
    ca = None
    if security.server_certificate is None:
        ca = _issuer_of(cert, [c for c in map(x509.load_der_x509_certificate, trusted) if _is_ca(c)])
    if ca is None:
        raise SecuritySetupError(untrusted_message(der, security, state_dir))
    issuer = ca.subject.rfc4514_string()
    problem = (_validity_problem(cert, "it", now) or _validity_problem(ca, f"its issuing CA {issuer}", now)
               or _identity_problem(cert, server, endpoint))
    if problem:
        raise SecuritySetupError(f"{rejected}, issued by the trusted CA {issuer}: {problem}")


def untrusted_message(der: bytes, security: SecurityConfig, state_dir: Path) -> str:
    """Saves the unknown certificate under ``untrusted/`` and says how to trust it."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", common_name(der) or "server").strip("_") or "server"
    folder = opcua_dir(state_dir) / "untrusted"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}_{thumbprint(der)[:16]}.der"
    path.write_bytes(der)
    print_ = f"SHA-1 {thumbprint(der)}"
    if security.server_certificate is not None:
        return (f"server certificate not trusted: it is not the pinned "
                f"security.server_certificate {security.server_certificate} ({print_}); if the server's "
                f"certificate was renewed, check it and copy {path} over {security.server_certificate}")
    trust_dir = security.trust_dir or default_trust_dir(state_dir)
    return (f"server certificate not trusted ({print_}): copy {path} into {trust_dir} "
            f"or set security.server_certificate: {path}")
