use cairn_client::{
    Client, ClientConfig, Credentials, Error, EventData, ExpectedRevision, ReadOptions,
};
use tokio_stream::StreamExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `cairn dev` runs its nodes with TLS, their certificates signed by its throwaway CA, and
    // with users: its admin secret is the admin's token.
    let token = std::fs::read_to_string("cairn-data/admin.token")?;
    let client = Client::with_config(ClientConfig {
        endpoints: vec![
            "https://127.0.0.1:2113".into(),
            "https://127.0.0.1:2114".into(),
            "https://127.0.0.1:2115".into(),
        ],
        tls_ca: Some(std::fs::read("cairn-data/ca.pem")?),
        credentials: Some(Credentials::Token(token.trim().to_owned())),
        ..ClientConfig::default()
    })?;
    let placed = EventData::json("OrderPlaced", &serde_json::json!({ "total_cents": 1999 }))?;
    match client
        .append("order-42", ExpectedRevision::NoStream, vec![placed])
        .await
    {
        Ok(written) => println!("written as revision {}", written.last_revision),
        Err(Error::WrongExpectedVersion { actual, .. }) => println!("already placed: {actual:?}"),
        // Every cairn_client::Error is a std::error::Error + Send + Sync: `?` and `.into()`
        // turn it into a Box<dyn Error> or an anyhow::Error.
        Err(other) => return Err(other.into()),
    }
    let mut events = client
        .read_stream("order-42", ReadOptions::forwards())
        .await?;
    while let Some(event) = events.next().await {
        let event = event?;
        println!("{} {}", event.revision, event.event_type);
    }
    Ok(())
}
