"""The server certificate checks of OPC UA Part 4, 6.1.3 beyond "is it trusted": validity period
(the certificate's and its CA's), and, for a certificate trusted through a CA, the endpoint's host
and the server's application URI. Certificates are made here with ``cryptography``; the
end-to-end cases serve them from the simulator (a real asyncua server)."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from drivers.opcua.client import ConnectFailed
from drivers.opcua.config import SecurityConfig
from drivers.opcua.security import SecuritySetupError, ServerIdentity, check_server_certificate
from simulators.opcua import APPLICATION_URI

NOW = dt.datetime.now(dt.UTC)
DAY = dt.timedelta(days=1)
ENDPOINT = "opc.tcp://127.0.0.1:4840/"


@dataclass(frozen=True)
class Issued:
    certificate: x509.Certificate
    key: rsa.RSAPrivateKey

    @property
    def der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    def save(self, folder: Path, name: str) -> tuple[Path, Path]:
        folder.mkdir(parents=True, exist_ok=True)
        # the key beside, not in, the folder: a trust folder holds certificates only
        cert, key = folder / f"{name}.der", folder.parent / f"{folder.name}-{name}_key.pem"
        cert.write_bytes(self.der)
        key.write_bytes(self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return cert, key


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def make_ca(name: str = "Plant CA", not_before: dt.datetime = NOW - DAY, not_after: dt.datetime = NOW + 365 * DAY
            ) -> Issued:
    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return Issued(cert, key)


def make_server(ca: Issued | None, uri: str = APPLICATION_URI, dns: tuple[str, ...] = (),
                ips: tuple[str, ...] = ("127.0.0.1",), not_before: dt.datetime = NOW - DAY,
                not_after: dt.datetime = NOW + 365 * DAY) -> Issued:
    """An application instance certificate as OPC UA servers carry, issued by ``ca`` (or
    self-signed)."""
    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test server")])
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri)]
    names += [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(a)) for a in ips]
    cert = (x509.CertificateBuilder().subject_name(subject)
            .issuer_name(ca.certificate.subject if ca else subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=True,
                                         data_encipherment=True, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca.key if ca else key, hashes.SHA256()))
    return Issued(cert, key)


@pytest.fixture(scope="module")
def ca() -> Issued:
    return make_ca()


def _check(server: Issued, trusted: list[Issued], tmp_path: Path, pinned: bool = False,
           endpoint: str = ENDPOINT, uri: str = APPLICATION_URI) -> None:
    folder = tmp_path / "trusted"
    for i, cert in enumerate(trusted):
        cert.save(folder, f"trusted{i}")
    security = (SecurityConfig(policy="Basic256Sha256", server_certificate=folder / "trusted0.der") if pinned
                else SecurityConfig(policy="Basic256Sha256", trust_dir=folder))
    check_server_certificate(ServerIdentity(server.der, uri), endpoint, security, tmp_path / "state")


def test_certificate_issued_by_a_trusted_ca_for_this_server_is_accepted(ca, tmp_path) -> None:
    _check(make_server(ca), [ca], tmp_path)
    _check(make_server(ca, dns=("CNC-01.plant.local",), ips=()), [ca], tmp_path / "dns",
           endpoint="opc.tcp://cnc-01.plant.local:4840/")


@pytest.mark.parametrize(("case", "expected"), [
    ("expired", r"validity period: it expired on \d{4}-\d\d-\d\d \d\d:\d\d UTC"),
    ("not yet valid", r"validity period: it is not valid before \d{4}-"),
    ("another host", r"host name: the certificate is issued for plc-7\.other\.site, 10\.9\.8\.7, not for "
                     r"the endpoint's host 127\.0\.0\.1"),
    ("another application", r"application URI: the certificate is issued for urn:other:server, not for the "
                            r"server's urn:mos-agent:simulator:cnc:server"),
])
def test_certificate_issued_by_a_trusted_ca_is_refused_naming_the_failed_check(ca, tmp_path, case, expected) -> None:
    server = {
        "expired": lambda: make_server(ca, not_before=NOW - 400 * DAY, not_after=NOW - DAY),
        "not yet valid": lambda: make_server(ca, not_before=NOW + 2 * DAY),
        "another host": lambda: make_server(ca, dns=("plc-7.other.site",), ips=("10.9.8.7",)),
        "another application": lambda: make_server(ca, uri="urn:other:server"),
    }[case]()
    with pytest.raises(SecuritySetupError, match=r"^server certificate rejected \(SHA-1 [0-9A-F]{40}\), issued by "
                                                 r"the trusted CA CN=Plant CA: " + expected):
        _check(server, [ca], tmp_path)


def test_an_expired_ca_passes_on_no_trust(tmp_path) -> None:
    old_ca = make_ca(not_before=NOW - 800 * DAY, not_after=NOW - 10 * DAY)
    server = make_server(old_ca, not_before=NOW - 400 * DAY, not_after=NOW + 30 * DAY)
    with pytest.raises(SecuritySetupError, match=r"validity period: its issuing CA CN=Plant CA expired on "):
        _check(server, [old_ca], tmp_path)


def test_a_certificate_signed_by_another_ca_of_the_same_name_is_untrusted(ca, tmp_path) -> None:
    impostor = make_ca()  # same subject, other key
    with pytest.raises(SecuritySetupError, match=r"^server certificate not trusted \(SHA-1"):
        _check(make_server(impostor), [ca], tmp_path)


@pytest.mark.parametrize("pinned", [True, False], ids=["pinned", "in trust_dir"])
def test_an_individually_trusted_certificate_keeps_its_names_but_not_past_its_dates(tmp_path, pinned) -> None:
    # a self-signed PLC certificate naming a host the agent does not use: the operator trusted it
    elsewhere = make_server(None, dns=("plc-7",), ips=())
    _check(elsewhere, [elsewhere], tmp_path / "names", pinned=pinned)
    expired = make_server(None, not_before=NOW - 400 * DAY, not_after=NOW - DAY)
    with pytest.raises(SecuritySetupError, match=r"^server certificate rejected \(SHA-1 [0-9A-F]{40}\): validity "
                                                 r"period: it expired on .*; the server needs a renewed certificate$"):
        _check(expired, [expired], tmp_path / "dates", pinned=pinned)


# ---------------------------------------------------------------- end to end, against the simulator


def _device(kit, sim, trust_dir: Path):
    return kit.device(sim.endpoint, [{"name": "spindle_speed", "node": sim.node_id("Spindle.Speed"),
                                      "category": "process"}],
                      connection={"security": {"policy": "Basic256Sha256", "trust_dir": str(trust_dir)}})


async def test_simulator_with_a_ca_issued_certificate_is_read(start_sim, kit, tmp_path, ca) -> None:
    cert, key = make_server(ca).save(tmp_path / "server-pki", "server")
    ca.save(tmp_path / "trusted", "plant-ca")
    sim = await start_sim(security=("sign-encrypt",), certificate=cert, private_key=key, update_rate=0)
    batch = await kit.driver(_device(kit, sim, tmp_path / "trusted"))[0].read_once()
    assert len(batch) == 1 and batch.quality[0] == 0


@pytest.mark.parametrize(("case", "expected"), [
    ("expired", "validity period: it expired on"),
    ("another host", "host name: the certificate is issued for plc-7.other.site, not for the endpoint's host "
                     "127.0.0.1"),
])
async def test_simulator_with_a_bad_ca_issued_certificate_is_refused(start_sim, kit, tmp_path, ca, case,
                                                                     expected) -> None:
    server = (make_server(ca, not_before=NOW - 400 * DAY, not_after=NOW - DAY) if case == "expired"
              else make_server(ca, dns=("plc-7.other.site",), ips=()))
    cert, key = server.save(tmp_path / "server-pki", "server")
    ca.save(tmp_path / "trusted", "plant-ca")
    sim = await start_sim(security=("sign-encrypt",), certificate=cert, private_key=key, update_rate=0)
    with pytest.raises(ConnectFailed) as raised:
        await kit.driver(_device(kit, sim, tmp_path / "trusted"))[0].read_once()
    assert raised.value.kind == "security"
    assert str(raised.value).startswith("device cnc-01: server certificate rejected (SHA-1 ")
    assert expected in str(raised.value)
