export * from './types.js';
export { configHash, decodeMessage, encodeMessage, ProtocolError, stateChecksum } from './codec.js';
export { ControlConnection, describePeerError, type PeerError } from './connection.js';
