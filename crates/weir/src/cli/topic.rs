//! `weir topic create|list|describe|alter|delete`.

use serde_json::json;
use weir_client::Admin;

use super::{block_on, number, pairs, table, Args, Failure, COMMON_FLAGS};

pub fn usage() -> String {
    format!(
        "usage: weir topic create NAME [--partitions N] [--config KEY=VALUE]...
       weir topic list
       weir topic describe NAME
       weir topic alter NAME [--config KEY=VALUE]... [--partitions N]
       weir topic delete NAME

  --partitions  create: partitions of the new topic (1); alter: grow to N
  --config      a topic config under its Kafka name (retention.ms, segment.bytes, …); repeatable
{COMMON_FLAGS}"
    )
}

pub fn run(args: &[String]) -> Result<(), Failure> {
    let usage = usage();
    let Some(command) = args.first().map(String::as_str) else {
        return Err(Failure::Usage(usage));
    };
    let a = Args::parse(&args[1..], &["--partitions", "--config"], &[], &usage)?;
    let name = || -> Result<&str, Failure> {
        match a.positional.as_slice() {
            [name] => Ok(name),
            [] => Err(Failure::Usage(format!(
                "weir topic {command} needs a topic name\n\n{usage}"
            ))),
            _ => Err(Failure::Usage(format!(
                "weir topic {command} takes one topic name\n\n{usage}"
            ))),
        }
    };
    let configs = pairs("--config", &a.values("--config"), &usage)?;
    let partitions: Option<i32> = a
        .value("--partitions")
        .map(|v| number("--partitions", v, &usage))
        .transpose()?;
    match command {
        "create" => {
            let name = name()?;
            let partitions = partitions.unwrap_or(1);
            block_on(async {
                let admin = Admin::connect(&a.config()).await?;
                admin.create_topic(name, partitions, &configs).await?;
                if a.json {
                    println!("{}", json!({"created": name, "partitions": partitions}));
                } else {
                    println!("created topic {name} with {partitions} partition(s)");
                }
                Ok(())
            })
        }
        "list" => {
            if !a.positional.is_empty() || !a.flags.is_empty() {
                return Err(Failure::Usage(format!(
                    "weir topic list takes no arguments\n\n{usage}"
                )));
            }
            block_on(async {
                let topics = Admin::connect(&a.config()).await?.list_topics().await?;
                if a.json {
                    let list: Vec<_> = topics
                        .iter()
                        .map(|t| json!({"name": t.name, "partitions": t.partitions}))
                        .collect();
                    println!("{}", serde_json::Value::Array(list));
                } else {
                    let rows: Vec<Vec<String>> = topics
                        .iter()
                        .map(|t| vec![t.name.clone(), t.partitions.to_string()])
                        .collect();
                    println!("{}", table(&["TOPIC", "PARTITIONS"], &rows));
                }
                Ok(())
            })
        }
        "describe" => {
            let name = name()?;
            block_on(async {
                let d = Admin::connect(&a.config())
                    .await?
                    .describe_topic(name)
                    .await?;
                if a.json {
                    let partitions: Vec<_> = d
                        .partitions
                        .iter()
                        .map(|p| {
                            json!({"partition": p.partition, "leader": p.leader,
                                   "earliest": p.earliest, "latest": p.latest})
                        })
                        .collect();
                    let configs: serde_json::Map<String, serde_json::Value> = d
                        .configs
                        .iter()
                        .map(|c| (c.name.clone(), json!(c.value)))
                        .collect();
                    println!(
                        "{}",
                        json!({"name": d.name, "partitions": partitions, "configs": configs})
                    );
                } else {
                    let rows: Vec<Vec<String>> = d
                        .partitions
                        .iter()
                        .map(|p| {
                            let records = p.latest - p.earliest;
                            vec![
                                p.partition.to_string(),
                                p.leader.to_string(),
                                p.earliest.to_string(),
                                p.latest.to_string(),
                                records.to_string(),
                            ]
                        })
                        .collect();
                    println!("topic {} ({} partitions)\n", d.name, d.partitions.len());
                    println!(
                        "{}\n",
                        table(
                            &["PARTITION", "LEADER", "EARLIEST", "LATEST", "RECORDS"],
                            &rows
                        )
                    );
                    let rows: Vec<Vec<String>> = d
                        .configs
                        .iter()
                        .map(|c| {
                            let source = if c.overridden { "topic" } else { "default" };
                            let value = c.value.clone().unwrap_or_default();
                            vec![c.name.clone(), value, source.to_string()]
                        })
                        .collect();
                    println!("{}", table(&["CONFIG", "VALUE", "SET BY"], &rows));
                }
                Ok(())
            })
        }
        "alter" => {
            let name = name()?;
            if configs.is_empty() && partitions.is_none() {
                return Err(Failure::Usage(format!(
                    "weir topic alter needs --config or --partitions\n\n{usage}"
                )));
            }
            block_on(async {
                let admin = Admin::connect(&a.config()).await?;
                admin.alter_topic(name, &configs, partitions).await?;
                if a.json {
                    let set: serde_json::Map<String, serde_json::Value> =
                        configs.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
                    println!(
                        "{}",
                        json!({"altered": name, "configs": set, "partitions": partitions})
                    );
                } else {
                    println!("altered topic {name}");
                }
                Ok(())
            })
        }
        "delete" => {
            let name = name()?;
            if !a.flags.is_empty() {
                return Err(Failure::Usage(format!(
                    "weir topic delete takes only a name\n\n{usage}"
                )));
            }
            block_on(async {
                Admin::connect(&a.config())
                    .await?
                    .delete_topic(name)
                    .await?;
                if a.json {
                    println!("{}", json!({"deleted": name}));
                } else {
                    println!("deleted topic {name}");
                }
                Ok(())
            })
        }
        other => Err(Failure::Usage(format!(
            "unknown topic command {other:?}\n\n{usage}"
        ))),
    }
}
