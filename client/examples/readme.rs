use cairn_client::{Client, ClientConfig, Error, EventData, ExpectedRevision, ReadOptions};
use tokio_stream::StreamExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The client profile `cairn dev` wrote (./cairn-data/client-profile.toml, or the file
    // CAIRN_PROFILE names): its nodes, the CA of their TLS certificates, the admin's token.
    // Elsewhere: ClientConfig's endpoints, tls_ca and credentials (Credentials::Token).
    let client = Client::with_config(ClientConfig::from_profile(None)?)?;
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
