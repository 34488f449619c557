/** The few parts of the `stun` package (no bundled types) that the STUN server and the birthday punch use. */
declare module 'stun' {
  import type { Socket } from 'node:dgram'

  interface StunMessage {
    readonly transactionId: Buffer
    addXorAddress(address: string, port: number): void
    addSoftware(software: string): void
    toBuffer(): Buffer
    getXorAddress(): { address: string; port: number } | undefined
  }
  interface StunServer {
    on(event: 'error', listener: (err: unknown) => void): void
    on(
      event: string,
      listener: (request: StunMessage, rinfo: { address: string; port: number }) => void,
    ): void
    send(message: StunMessage, port: number, address: string): void
    close(): void
  }
  const stun: {
    createServer(options: { type: 'udp4' | 'udp6'; socket?: Socket }): StunServer
    createMessage(type: number, transactionId?: Buffer): StunMessage
    decode(buf: Buffer): StunMessage
    constants: {
      STUN_BINDING_REQUEST: number
      STUN_BINDING_RESPONSE: number
      STUN_EVENT_BINDING_REQUEST: string
    }
  }
  export default stun
}
