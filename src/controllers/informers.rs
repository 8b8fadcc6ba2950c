//! The reflectors the controllers share: one watch per kind, made when a controller first
//! asks for it, waking every controller that subscribed.

use std::sync::{Arc, Mutex, OnceLock};

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::Notify;

/// One kind's cache, and who is woken when it changes.
pub struct Informer<K: kube::Resource<DynamicType = ()> + 'static> {
    pub store: Store<K>,
    subscribers: Arc<Mutex<Vec<Arc<Notify>>>>,
    /// Whether the first full list is in. (Not `Store::wait_until_ready`: its one-shot
    /// channel wakes only the last of several tasks waiting at once.)
    listed: tokio::sync::watch::Receiver<bool>,
}

impl<K> Informer<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    fn start(client: kube::Client) -> Informer<K> {
        let (store, writer) = reflector::store();
        let subscribers: Arc<Mutex<Vec<Arc<Notify>>>> = Arc::default();
        let woken = subscribers.clone();
        let (list_done, listed) = tokio::sync::watch::channel(false);
        let stream = watcher(Api::<K>::all(client), watcher::Config::default()).default_backoff().reflect(writer);
        tokio::spawn(stream.for_each(move |event| {
            match event {
                Ok(watcher::Event::InitDone) => {
                    list_done.send_replace(true);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("the watch of {}: {e}", K::plural(&())),
            }
            for subscriber in woken.lock().expect("subscribers").iter() {
                subscriber.notify_one();
            }
            async {}
        }));
        Informer { store, subscribers, listed }
    }

    /// Wakes `wake` at each change from now on.
    pub fn subscribe(&self, wake: &Arc<Notify>) -> &Informer<K> {
        self.subscribers.lock().expect("subscribers").push(wake.clone());
        self
    }

    /// Waits for the first full list; false if the watch ended before it.
    pub async fn ready(&self) -> bool {
        self.listed.clone().wait_for(|listed| *listed).await.is_ok()
    }

    pub fn all(&self) -> Vec<Arc<K>> {
        self.store.state()
    }
}

/// Every kind a controller watches, each watched once.
pub struct Informers {
    client: kube::Client,
    pods: OnceLock<Informer<Pod>>,
    nodes: OnceLock<Informer<Node>>,
    namespaces: OnceLock<Informer<Namespace>>,
    services: OnceLock<Informer<Service>>,
    endpoints: OnceLock<Informer<Endpoints>>,
    slices: OnceLock<Informer<EndpointSlice>>,
    replica_sets: OnceLock<Informer<ReplicaSet>>,
    deployments: OnceLock<Informer<Deployment>>,
    leases: OnceLock<Informer<Lease>>,
    jobs: OnceLock<Informer<Job>>,
    cronjobs: OnceLock<Informer<CronJob>>,
    daemon_sets: OnceLock<Informer<DaemonSet>>,
    revisions: OnceLock<Informer<ControllerRevision>>,
    stateful_sets: OnceLock<Informer<StatefulSet>>,
    claims: OnceLock<Informer<PersistentVolumeClaim>>,
    volumes: OnceLock<Informer<PersistentVolume>>,
    storage_classes: OnceLock<Informer<StorageClass>>,
    autoscalers: OnceLock<Informer<HorizontalPodAutoscaler>>,
}

impl Informers {
    pub fn new(client: kube::Client) -> Informers {
        Informers {
            client,
            pods: OnceLock::new(),
            nodes: OnceLock::new(),
            namespaces: OnceLock::new(),
            services: OnceLock::new(),
            endpoints: OnceLock::new(),
            slices: OnceLock::new(),
            replica_sets: OnceLock::new(),
            deployments: OnceLock::new(),
            leases: OnceLock::new(),
            jobs: OnceLock::new(),
            cronjobs: OnceLock::new(),
            daemon_sets: OnceLock::new(),
            revisions: OnceLock::new(),
            stateful_sets: OnceLock::new(),
            claims: OnceLock::new(),
            volumes: OnceLock::new(),
            storage_classes: OnceLock::new(),
            autoscalers: OnceLock::new(),
        }
    }

    pub fn pods(&self) -> &Informer<Pod> {
        self.pods.get_or_init(|| Informer::start(self.client.clone()))
    }

    pub fn nodes(&self) -> &Informer<Node> {
        self.nodes.get_or_init(|| Informer::start(self.client.clone()))
    }

    pub fn namespaces(&self) -> &Informer<Namespace> {
        self.namespaces.get_or_init(|| Informer::start(self.client.clone()))
    }

    pub fn services(&self) -> &Informer<Service> {
        self.services.get_or_init(|| Informer::start(self.client.clone()))
    }

    pub fn endpoints(&self) -> &Informer<Endpoints> {
        self.endpoints.get_or_init(|| Informer::start(self.client.clone()))
    }

    pub fn slices(&self) -> &Informer<EndpointSlice> {
        self.slices.get_or_init(|| Informer::start(self.client.clone()))
    }

    pub fn replica_sets(&self) -> &Informer<ReplicaSet> {
        self.replica_sets.get_or_init(|| Informer::start(self.client.clone()))
    }

    pub fn deployments(&self) -> &Informer<Deployment> {
        self.deployments.get_or_init(|| Informer::start(self.client.clone()))
    }

    pub fn leases(&self) -> &Informer<Lease> {
        self.leases.get_or_init(|| Informer::start(self.client.clone()))
    }

    pub fn jobs(&self) -> &Informer<Job> {
        self.jobs.get_or_init(|| Informer::start(self.client.clone()))
    }

    pub fn cronjobs(&self) -> &Informer<CronJob> {
        self.cronjobs.get_or_init(|| Informer::start(self.client.clone()))
    }

    pub fn daemon_sets(&self) -> &Informer<DaemonSet> {
        self.daemon_sets.get_or_init(|| Informer::start(self.client.clone()))
    }

    pub fn revisions(&self) -> &Informer<ControllerRevision> {
        self.revisions.get_or_init(|| Informer::start(self.client.clone()))
    }

    pub fn stateful_sets(&self) -> &Informer<StatefulSet> {
        self.stateful_sets.get_or_init(|| Informer::start(self.client.clone()))
    }

    pub fn claims(&self) -> &Informer<PersistentVolumeClaim> {
        self.claims.get_or_init(|| Informer::start(self.client.clone()))
    }

    pub fn volumes(&self) -> &Informer<PersistentVolume> {
        self.volumes.get_or_init(|| Informer::start(self.client.clone()))
    }

    pub fn storage_classes(&self) -> &Informer<StorageClass> {
        self.storage_classes.get_or_init(|| Informer::start(self.client.clone()))
    }

    pub fn autoscalers(&self) -> &Informer<HorizontalPodAutoscaler> {
        self.autoscalers.get_or_init(|| Informer::start(self.client.clone()))
    }
}
