//! Counting the requests we send, for measurements: with `ZSNAP_COUNT_REQUESTS=FILE` in the
//! environment every HTTP attempt (retries included) appends its operation's name
//! (`ListObjectsV2`, `HeadObject`, …) as one line to FILE. Lines, not a summary at exit,
//! because a command may exit from anywhere; one `write` each on an O_APPEND file, so
//! concurrent requests and processes do not mix lines. bench/scale and tests/it/scale.rs
//! read it to show that planning stays at one request per listing page.

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use std::fs::File;
use std::io::Write;

pub const ENV: &str = "ZSNAP_COUNT_REQUESTS";

#[derive(Debug)]
pub struct CountRequests {
    file: String,
}

impl CountRequests {
    /// The interceptor, when `ZSNAP_COUNT_REQUESTS` names a file.
    pub fn from_env() -> Option<CountRequests> {
        std::env::var(ENV).ok().filter(|f| !f.is_empty()).map(|file| CountRequests { file })
    }
}

impl Intercept for CountRequests {
    fn name(&self) -> &'static str {
        "CountRequests"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let op = cfg.load::<Metadata>().map(|m| m.name()).unwrap_or("unknown");
        // A count that silently loses lines would measure nothing: fail the request instead.
        let mut f = File::options()
            .create(true)
            .append(true)
            .open(&self.file)
            .map_err(|e| format!("{ENV}: cannot open {}: {e}", self.file))?;
        f.write_all(format!("{op}\n").as_bytes()).map_err(|e| format!("{ENV}: cannot write {}: {e}", self.file))?;
        Ok(())
    }
}
