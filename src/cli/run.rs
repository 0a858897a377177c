//! `resilite run`: the standalone process. SIGTERM or SIGINT stop it
//! (draining writes, exit 0); SIGHUP reloads the config file (a file that
//! is refused is logged and the process keeps running).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::{http, Runtime};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The config file (TOML); RESILITE_<SECTION>_<KEY> variables override it.
    #[arg(long, short, default_value = "config.toml")]
    config: PathBuf,
}

pub fn run(args: RunArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let config = Config::load(&args.config)?;
    // `[log] level`, unless RESILITE_LOG set the filter.
    if let Some(Err(e)) = crate::log_filter::set(&config.log.level) {
        tracing::warn!(error = %e, "log.level was not applied");
    }
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    tokio.block_on(serve(config))
}

async fn serve(config: Config) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let listen = config.http.listen.clone();
    let listener = TcpListener::bind(&listen)
        .await
        .map_err(|e| format!("cannot listen on {listen} (http.listen): {e}"))?;
    // The migrations of `schema.migrations_dir` are applied while the
    // server already answers: `/ready` says 503 (migrating) until then.
    let rt = Runtime::launch(config).await?;
    reload_on_sighup(rt.clone());
    let addr = listener.local_addr()?;
    // Scripts and tests read this line to find the port.
    println!("resilite listening on http://{addr}");
    std::io::stdout().flush()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(http::serve(rt.clone(), listener, async move {
        tokio::select! {
            _ = shutdown_signal() => {}
            _ = stopped => {}
        }
    }));
    if let Err(e) = rt.schema_at_start().await {
        let _ = stop.send(());
        let _ = server.await;
        if let Err(stop) = rt.shutdown().await {
            tracing::warn!(error = %stop, "the runtime did not stop cleanly after the schema step failed");
        }
        return Err(e.into());
    }
    server.await??;
    drop(stop);
    tracing::info!("stopped accepting requests; draining writes");
    rt.shutdown().await?;
    Ok(ExitCode::SUCCESS)
}

/// On SIGHUP, reload the config file: a refused one is logged (with the
/// reason) and the process keeps running on the configuration in effect.
fn reload_on_sighup(rt: Runtime) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGHUP; reload with POST /v1/config/reload");
            return;
        }
    };
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP received: reloading the configuration");
            // A refusal is logged by the reload itself, with its reason.
            let _ = rt.reload_config().await;
        }
    });
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the server");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}
