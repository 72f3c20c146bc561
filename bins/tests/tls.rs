//! End-to-end tests of TLS (issue 9): the real agent relaying through a real `mdproxy server
//! --tls-cert` (mutual TLS with `--tls-client-ca`), the agent refusing what it must refuse
//! (unknown CA, wrong name, no client certificate) with 503 and a log line naming the reason,
//! `--metadata-insecure`, and the neutron backend over https with a CA file. Certificates are
//! made here with rcgen: a CA, a server certificate for localhost/127.0.0.1, a client
//! certificate, a certificate for another host, and a CA nobody trusts.

mod common;

#[cfg(feature = "tls")]
mod with_tls {
    use std::fs;
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair,
    };

    use crate::common::*;

    runtime_tests! {
        agent_relays_through_an_https_server_with_a_client_certificate,
        an_unknown_ca_is_503_and_logged,
        a_certificate_for_another_host_is_503_and_logged,
        insecure_accepts_the_untrusted_server_and_warns,
        a_server_requiring_client_certificates_refuses_an_agent_without_one,
        neutron_and_keystone_over_https_with_a_ca_file,
        neutron_with_an_unknown_ca_is_503_and_logged,
        bad_tls_files_exit_2,
    }

    const SAMPLE: &str = include_str!("../../core/tests/golden/instance.toml");
    const UUID: &str = "6f9c1b1e-3c4a-4b8e-9d2a-1f2e3d4c5b6a";
    const PROJECT: &str = "8a5ce0e4f2b84d8b9b1e2c3d4f5a6b7c";
    const EC2_ID: &str = "i-0000002a";
    const SECRET: &str = "s3cr3t";

    type Ca = CertifiedIssuer<'static, KeyPair>;

    fn new_ca(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
    }

    /// (certificate chain PEM, key PEM) for `names`, signed by `ca`.
    fn leaf(ca: &Ca, names: &[&str], purpose: ExtendedKeyUsagePurpose) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "mdproxy test");
        params.extended_key_usages = vec![purpose];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, ca).unwrap();
        (cert.pem() + &ca.pem(), key.serialize_pem())
    }

    /// Every file of the tests: the PKI, the agent's and the server's files.
    struct Pki {
        dir: TempDir,
        /// The trusted CA's certificate.
        ca_file: PathBuf,
        /// A CA that signed nothing the tests use.
        other_ca_file: PathBuf,
        /// localhost and 127.0.0.1, by the trusted CA.
        server: (PathBuf, PathBuf),
        /// `elsewhere.example` only, by the trusted CA.
        wrong_host: (PathBuf, PathBuf),
        /// localhost, by a CA nobody trusts.
        untrusted: (PathBuf, PathBuf),
        /// The agent's client certificate, by the trusted CA.
        client: (PathBuf, PathBuf),
        instances: PathBuf,
        secret: PathBuf,
        map: PathBuf,
    }

    impl Pki {
        fn new() -> Pki {
            let dir = TempDir::new();
            let (ca, other) = (new_ca("mdproxy test CA"), new_ca("nobody trusts me"));
            let write = |name: &str, text: &str| {
                let path = dir.join(name);
                fs::write(&path, text).unwrap();
                path
            };
            let pair = |name: &str, (cert, key): (String, String)| {
                (
                    write(&format!("{name}.pem"), &cert),
                    write(&format!("{name}-key.pem"), &key),
                )
            };
            let server = ExtendedKeyUsagePurpose::ServerAuth;
            let pki = Pki {
                ca_file: write("ca.pem", &ca.pem()),
                other_ca_file: write("other-ca.pem", &other.pem()),
                server: pair(
                    "server",
                    leaf(&ca, &["localhost", "127.0.0.1"], server.clone()),
                ),
                wrong_host: pair("wrong", leaf(&ca, &["elsewhere.example"], server.clone())),
                untrusted: pair("untrusted", leaf(&other, &["localhost"], server)),
                client: pair(
                    "client",
                    leaf(&ca, &["agent"], ExtendedKeyUsagePurpose::ClientAuth),
                ),
                instances: dir.join("instances"),
                secret: write("secret", &format!("{SECRET}\n")),
                map: write(
                    "map.toml",
                    &format!(
                        "[[router]]\nid = \"{ROUTER}\"\nnetworks = [\"{NETWORK}\"]\n\n\
                         [[port]]\nnetwork = \"{NETWORK}\"\nip = \"10.0.0.5\"\n\
                         device_id = \"{UUID}\"\nproject_id = \"{PROJECT}\"\n"
                    ),
                ),
                dir,
            };
            fs::create_dir(&pki.instances).unwrap();
            fs::write(pki.instances.join(format!("{UUID}.toml")), SAMPLE).unwrap();
            pki
        }

        /// `mdproxy server` over HTTPS with `cert`, plus `extra` flags.
        fn server(&self, rt: Runtime, cert: &(PathBuf, PathBuf), extra: &[String]) -> Proxy {
            Proxy::start_with(rt, |port| {
                let mut args = vec![
                    "server".to_owned(),
                    format!("--listen=127.0.0.1:{port}"),
                    format!("--instances={}", self.instances.display()),
                    format!("--shared-secret-file={}", self.secret.display()),
                    format!("--tls-cert={}", cert.0.display()),
                    format!("--tls-key={}", cert.1.display()),
                ];
                args.extend_from_slice(extra);
                args
            })
        }

        /// `mdproxy agent` (static map) relaying to `url`, plus `extra` flags.
        fn agent(&self, rt: Runtime, url: &str, extra: &[String]) -> Agent {
            let mut args = vec![
                format!("--metadata-url={url}"),
                format!("--shared-secret-file={}", self.secret.display()),
                format!("--static-map={}", self.map.display()),
            ];
            args.extend_from_slice(extra);
            Agent::start(
                rt,
                &self.dir.join(&format!("agent-{}.sock", free_port())),
                &args,
            )
        }

        fn client_cert_flags(&self) -> Vec<String> {
            vec![
                format!("--metadata-client-cert={}", self.client.0.display()),
                format!("--metadata-client-key={}", self.client.1.display()),
            ]
        }

        fn ca_flag(&self) -> String {
            format!("--metadata-ca-file={}", self.ca_file.display())
        }

        /// The fake services' TLS: the trusted server certificate.
        fn rustls_server(&self) -> Arc<rustls::ServerConfig> {
            let (cert, key) = (
                fs::read(&self.server.0).unwrap(),
                fs::read(&self.server.1).unwrap(),
            );
            use rustls::pki_types::pem::PemObject;
            let chain = rustls::pki_types::CertificateDer::pem_slice_iter(&cert)
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(&key).unwrap();
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let cfg = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .unwrap();
            Arc::new(cfg)
        }
    }

    fn instance_id_request() -> Vec<u8> {
        format!(
            "GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\n\
             X-Forwarded-For: 10.0.0.5\r\nX-Neutron-Router-ID: {ROUTER}\r\n\r\n"
        )
        .into_bytes()
    }

    fn https(server: &Proxy, host: &str) -> String {
        format!("https://{host}:{}", server.addr.port())
    }

    fn assert_503(resp: &Response) {
        assert_eq!(resp.status, 503, "{}", resp.body_text());
        assert!(
            resp.body_text()
                .contains("The remote metadata server is temporarily unavailable"),
            "{}",
            resp.body_text()
        );
    }

    fn agent_relays_through_an_https_server_with_a_client_certificate(rt: Runtime) {
        let pki = Pki::new();
        let client_ca = format!("--tls-client-ca={}", pki.ca_file.display());
        let server = pki.server(rt, &pki.server, &[client_ca]);
        let mut flags = vec![pki.ca_flag()];
        flags.extend(pki.client_cert_flags());
        let agent = pki.agent(rt, &https(&server, "localhost"), &flags);
        let log = agent.wait_for_log("agent listening");
        assert!(log.contains("TLS: CA "), "{log}");
        let mut client = Client::connect_unix(&agent.socket);
        for _ in 0..3 {
            let resp = client.exchange(&instance_id_request());
            assert_eq!((resp.status, resp.body_text().as_str()), (200, EC2_ID));
        }
        // The server names its clients by their address: an IP literal works as well.
        let agent = pki.agent(rt, &https(&server, "127.0.0.1"), &flags);
        let resp = request_unix(&agent.socket, &instance_id_request());
        assert_eq!((resp.status, resp.body_text().as_str()), (200, EC2_ID));
        let log = server.log();
        assert!(
            log.contains("HTTPS") && log.contains("client certificates required"),
            "{log}"
        );
    }

    fn an_unknown_ca_is_503_and_logged(rt: Runtime) {
        let pki = Pki::new();
        let server = pki.server(rt, &pki.server, &[]);
        let flag = format!("--metadata-ca-file={}", pki.other_ca_file.display());
        let agent = pki.agent(rt, &https(&server, "localhost"), &[flag]);
        assert_503(&request_unix(&agent.socket, &instance_id_request()));
        let log = agent.wait_for_log("TLS handshake with localhost failed");
        assert!(
            log.contains("invalid peer certificate: UnknownIssuer"),
            "{log}"
        );
    }

    fn a_certificate_for_another_host_is_503_and_logged(rt: Runtime) {
        let pki = Pki::new();
        let server = pki.server(rt, &pki.wrong_host, &[]);
        let agent = pki.agent(rt, &https(&server, "localhost"), &[pki.ca_flag()]);
        assert_503(&request_unix(&agent.socket, &instance_id_request()));
        let log = agent.wait_for_log("TLS handshake with localhost failed");
        assert!(log.contains("not valid for name \"localhost\""), "{log}");
    }

    fn insecure_accepts_the_untrusted_server_and_warns(rt: Runtime) {
        let pki = Pki::new();
        let server = pki.server(rt, &pki.untrusted, &[]);
        let insecure = "--metadata-insecure".to_owned();
        let agent = pki.agent(rt, &https(&server, "127.0.0.1"), &[insecure]);
        let resp = request_unix(&agent.socket, &instance_id_request());
        assert_eq!((resp.status, resp.body_text().as_str()), (200, EC2_ID));
        let log = agent.wait_for_log("certificate NOT checked");
        assert_eq!(
            log.matches("certificates are not checked").count(),
            1,
            "{log}"
        );
    }

    fn a_server_requiring_client_certificates_refuses_an_agent_without_one(rt: Runtime) {
        let pki = Pki::new();
        let client_ca = format!("--tls-client-ca={}", pki.ca_file.display());
        let server = pki.server(rt, &pki.server, &[client_ca]);
        let agent = pki.agent(rt, &https(&server, "localhost"), &[pki.ca_flag()]);
        assert_503(&request_unix(&agent.socket, &instance_id_request()));
        let log = agent.wait_for_log("TLS with localhost failed");
        assert!(log.contains("CertificateRequired"), "{log}");
        server.wait_for_log("TLS handshake failed");
        // The server is fine afterwards: an agent with a certificate gets through.
        let agent = pki.agent(
            rt,
            &https(&server, "localhost"),
            &[
                pki.ca_flag(),
                pki.client_cert_flags()[0].clone(),
                pki.client_cert_flags()[1].clone(),
            ],
        );
        let resp = request_unix(&agent.socket, &instance_id_request());
        assert_eq!(resp.status, 200, "{}", resp.body_text());
    }

    fn neutron_stack(pki: &Pki) -> FakeOpenStack {
        FakeOpenStack::start_with(
            Some("hunter2"),
            &[(ROUTER, &[NETWORK])],
            &[FakePort::new(NETWORK, "10.0.0.5", UUID, PROJECT)],
            Some(pki.rustls_server()),
        )
    }

    /// The agent with the neutron backend (Keystone, Neutron from the catalog) relaying to a
    /// plain-HTTP fake metadata server that echoes X-Instance-ID.
    fn neutron_agent(rt: Runtime, pki: &Pki, os: &FakeOpenStack, ca: &Path) -> (Agent, Upstream) {
        let metadata = Upstream::start_tcp(|req| {
            Reply::Send(ok_response(
                req.header_values("x-instance-id").join(",").as_bytes(),
            ))
        });
        let password = pki.dir.join("password");
        fs::write(&password, "hunter2\n").unwrap();
        let args = vec![
            format!("--metadata-url={}", metadata.url()),
            format!("--shared-secret-file={}", pki.secret.display()),
            "--backend=neutron".to_owned(),
            format!("--auth-url={}", os.auth_url()),
            "--username=mdproxy".to_owned(),
            format!("--password-file={}", password.display()),
            "--project-name=service".to_owned(),
            "--region-name=RegionOne".to_owned(),
            format!("--neutron-ca-file={}", ca.display()),
            "--neutron-timeout=5".to_owned(),
        ];
        let socket = pki.dir.join(&format!("agent-{}.sock", free_port()));
        (Agent::start(rt, &socket, &args), metadata)
    }

    fn neutron_and_keystone_over_https_with_a_ca_file(rt: Runtime) {
        let pki = Pki::new();
        let os = neutron_stack(&pki);
        assert!(os.auth_url().starts_with("https://"));
        let (agent, metadata) = neutron_agent(rt, &pki, &os, &pki.ca_file);
        let resp = request_unix(&agent.socket, &instance_id_request());
        let got = (resp.status, resp.body_text());
        assert_eq!((got.0, got.1.as_str()), (200, UUID), "{}", agent.log());
        assert_eq!(metadata.count(), 1);
        assert_eq!(os.tokens().len(), 1);
        assert_eq!(os.port_queries().len(), 1);
        let log = agent.wait_for_log("Neutron at https://127.0.0.1:");
        assert!(log.contains("TLS: CA "), "{log}");
    }

    fn neutron_with_an_unknown_ca_is_503_and_logged(rt: Runtime) {
        let pki = Pki::new();
        let os = neutron_stack(&pki);
        let (agent, metadata) = neutron_agent(rt, &pki, &os, &pki.other_ca_file);
        let resp = request_unix(&agent.socket, &instance_id_request());
        assert_eq!(resp.status, 503, "{}", resp.body_text());
        let log = agent.wait_for_log("Keystone authentication failed");
        assert!(
            log.contains(
                "TLS handshake with 127.0.0.1 failed: invalid peer certificate: UnknownIssuer"
            ),
            "{log}"
        );
        assert_eq!(metadata.count(), 0);
        assert!(os.tokens().is_empty());
    }

    fn bad_tls_files_exit_2(rt: Runtime) {
        let pki = Pki::new();
        let rt = format!("--runtime={}", rt.name());
        let secret = format!("--shared-secret-file={}", pki.secret.display());
        let map = format!("--static-map={}", pki.map.display());
        let socket = format!("--listen-socket={}", pki.dir.join("never.sock").display());
        let agent = |extra: &[&str]| -> Vec<String> {
            let mut a = vec![
                "agent".to_owned(),
                rt.clone(),
                secret.clone(),
                map.clone(),
                socket.clone(),
            ];
            a.extend(extra.iter().map(|s| s.to_string()));
            a
        };
        let url = "--metadata-url=https://localhost:1";
        assert_exit_2(
            &agent(&[url, "--metadata-ca-file=/nonexistent/ca.pem"]),
            "cannot read",
        );
        let not_pem = format!("--metadata-ca-file={}", pki.map.display());
        assert_exit_2(&agent(&[url, &not_pem]), "holds no PEM certificate");
        let key_only = [
            url.to_owned(),
            format!("--metadata-client-cert={}", pki.client.1.display()),
            format!("--metadata-client-key={}", pki.client.1.display()),
        ];
        let key_only: Vec<&str> = key_only.iter().map(String::as_str).collect();
        assert_exit_2(&agent(&key_only), "--metadata-client-cert");
        assert_exit_2(&agent(&["--metadata-insecure"]), "need an https://");
        let server = |extra: &[String]| -> Vec<String> {
            let mut a = vec![
                "server".to_owned(),
                rt.clone(),
                "--listen=127.0.0.1:0".to_owned(),
                format!("--instances={}", pki.instances.display()),
                secret.clone(),
            ];
            a.extend_from_slice(extra);
            a
        };
        let mismatched = [
            format!("--tls-cert={}", pki.server.0.display()),
            format!("--tls-key={}", pki.client.1.display()),
        ];
        assert_exit_2(&server(&mismatched), "--tls-cert");
        assert_exit_2(
            &server(&[format!("--tls-cert={}", pki.server.0.display())]),
            "needs --tls-key",
        );
        assert_help_mentions(
            &["agent", "--help"],
            &[
                "--metadata-ca-file",
                "--metadata-insecure",
                "--metadata-client-cert",
                "--metadata-client-key",
                "--neutron-ca-file",
                "--neutron-insecure",
            ],
        );
        assert_help_mentions(
            &["server", "--help"],
            &["--tls-cert", "--tls-key", "--tls-client-ca"],
        );
    }
}

/// A build without TLS says so, and exits 2, for every TLS flag and https URL.
#[cfg(not(feature = "tls"))]
#[test]
fn a_build_without_tls_refuses_tls_flags_with_exit_2() {
    use common::*;
    let cases: &[&[&str]] = &[
        &[
            "agent",
            "--shared-secret-file=/dev/null",
            "--static-map=/m",
            "--metadata-url=https://n",
        ],
        &[
            "agent",
            "--shared-secret-file=/dev/null",
            "--static-map=/m",
            "--metadata-insecure",
        ],
        &[
            "server",
            "--instances=/i",
            "--direct",
            "--tls-cert=/c",
            "--tls-key=/k",
        ],
        &[
            "agent",
            "--shared-secret-file=/dev/null",
            "--backend=neutron",
            "--neutron-url=https://n:9696",
        ],
    ];
    for args in cases {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        assert_exit_2(&args, "this build has no TLS");
    }
}
