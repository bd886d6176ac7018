export * from './types.js';
export { configHash, decodeMessage, encodeMessage, ProtocolError, stateChecksum } from './codec.js';
export { ControlConnection } from './connection.js';
