export * from './types.js';
export { configHash, decodeMessage, encodeMessage, ProtocolError, weightsChecksum } from './codec.js';
export { ControlConnection } from './connection.js';
