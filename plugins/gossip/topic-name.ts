/**
 * The GossipSub topic of a joined topic: `/<namespace>/gossip/<topic>`. The namespace keeps meshes that
 * share connections (a common bootstrap or relay node) apart, as it keeps their DHT topic keys apart.
 */
export function gossipTopicName(namespace: string, topic: string): string {
  return `/${namespace}/gossip/${topic}`
}
